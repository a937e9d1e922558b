"""`uv run apps/train`: Train TrajLoom (VAE, latent statistics, generator, on-policy fine-tuning, visibility head) from one CPU to many GPUs."""

from trajloom_train.cli import main

if __name__ == "__main__":
    main()
