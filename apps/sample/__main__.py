"""`uv run apps/sample`: Predict future trajectories for videos, tracks or shards; write run folders, renders and Wan-Move exports."""

from trajloom_sample.cli import main

if __name__ == "__main__":
    main()
