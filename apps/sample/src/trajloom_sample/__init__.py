"""The `sample` app of TrajLoom."""
