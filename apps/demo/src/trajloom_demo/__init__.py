"""TrajLoom live demo (Gradio)."""
