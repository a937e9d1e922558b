"""The `bench` app of TrajLoom."""
