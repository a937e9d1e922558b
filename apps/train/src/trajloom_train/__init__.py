"""The `train` app of TrajLoom."""
