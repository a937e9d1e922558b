"""`uv run apps/bench`: Build TrajLoomBench and score methods on it."""

from trajloom_bench.cli import main

if __name__ == "__main__":
    main()
