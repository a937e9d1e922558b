"""`uv run apps/demo`: the live demo in the browser (Gradio): pick or upload a video, predict its futures."""

from trajloom_demo.cli import main

if __name__ == "__main__":
    main()
