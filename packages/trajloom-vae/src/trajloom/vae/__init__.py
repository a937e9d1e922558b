"""TrajLoom-VAE (paper §3.2): attention with backend dispatch, shared transformer layers,
the trajectory-field VAE, its losses, presets, checkpoints and latent statistics."""

from trajloom.vae.attention import (
    attention,
    attention_backend,
    available_attention_backends,
    last_attention_backend,
    set_attention_backend,
)
from trajloom.vae.layers import (
    LearnableFourierFeatures,
    Mlp,
    PatchEmbed,
    SelfAttention,
    sincos_1d,
    sincos_2d,
)

__all__ = [
    "LearnableFourierFeatures",
    "Mlp",
    "PatchEmbed",
    "SelfAttention",
    "attention",
    "attention_backend",
    "available_attention_backends",
    "last_attention_backend",
    "set_attention_backend",
    "sincos_1d",
    "sincos_2d",
]
__version__ = "0.1.0"
