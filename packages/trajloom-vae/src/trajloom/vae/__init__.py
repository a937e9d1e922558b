"""TrajLoom-VAE (paper §3.2): attention with backend dispatch, shared transformer layers,
the trajectory-field VAE, its losses, presets, checkpoints and latent statistics."""

from trajloom.vae import losses
from trajloom.vae.attention import (
    attention,
    attention_backend,
    available_attention_backends,
    last_attention_backend,
    set_attention_backend,
)
from trajloom.vae.config import VAE_PRESETS, VAEConfig, vae_preset
from trajloom.vae.io import load_pretrained, save_pretrained
from trajloom.vae.layers import (
    LearnableFourierFeatures,
    Mlp,
    PatchEmbed,
    SelfAttention,
    sincos_1d,
    sincos_2d,
)
from trajloom.vae.losses import VAELossConfig, VAELosses
from trajloom.vae.model import DiagonalGaussian, TrajLoomVAE, VAEOutput
from trajloom.vae.released import from_released, load_released_state_dict, released_config
from trajloom.vae.stats import LatentStats, LatentStatsAccumulator, write_latent_stats_json

__all__ = [
    "VAE_PRESETS",
    "DiagonalGaussian",
    "LatentStats",
    "LatentStatsAccumulator",
    "LearnableFourierFeatures",
    "Mlp",
    "PatchEmbed",
    "SelfAttention",
    "TrajLoomVAE",
    "VAEConfig",
    "VAELossConfig",
    "VAELosses",
    "VAEOutput",
    "attention",
    "attention_backend",
    "available_attention_backends",
    "from_released",
    "last_attention_backend",
    "load_pretrained",
    "load_released_state_dict",
    "losses",
    "released_config",
    "save_pretrained",
    "set_attention_backend",
    "sincos_1d",
    "sincos_2d",
    "vae_preset",
    "write_latent_stats_json",
]
__version__ = "0.1.0"
