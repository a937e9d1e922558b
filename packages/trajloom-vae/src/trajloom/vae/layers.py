"""Transformer pieces shared by the TrajLoom VAE and the flow generator.

Parameter names follow the released code (and timm's ``Mlp`` / ``PatchEmbed``), so
state dicts of released checkpoints load without renaming:
``fc1``/``fc2`` in an MLP, ``qkv``/``proj`` in attention, ``w``/``mlp`` in the learnable
Fourier features, ``proj`` in the patch embedding. Norms are torch's ``nn.RMSNorm``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from einops import rearrange
from torch import nn

from trajloom.vae.attention import attention

__all__ = [
    "LearnableFourierFeatures",
    "Mlp",
    "PatchEmbed",
    "SelfAttention",
    "sincos_1d",
    "sincos_2d",
]


class Mlp(nn.Module):
    """Two linear layers with an exact GELU between them (timm's ``Mlp`` key names)."""

    def __init__(
        self, in_features: int, hidden_features: int, out_features: int | None = None
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SelfAttention(nn.Module):
    """Multi-head self-attention through :func:`trajloom.vae.attention.attention`.

    ``qkv`` is one Linear whose output is laid out ``(three heads head_dim)``, as in the
    released VAE and generator. ``qk_norm`` applies an RMSNorm without affine weights
    (eps 1e-6) over each head's queries and keys, as the released generator does.
    """

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool = True, qk_norm: bool = False
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"SelfAttention: dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.qk_norm = qk_norm
        if qk_norm:
            self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6, elementwise_affine=False)
            self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6, elementwise_affine=False)

    def forward(self, x: torch.Tensor, *, backend: str | None = None) -> torch.Tensor:
        """``x: "b s d"`` -> ``"b s d"``."""
        qkv = rearrange(self.qkv(x), "b s (three h e) -> three b s h e", three=3, h=self.num_heads)
        q, k, v = qkv.unbind(0)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        out = attention(q, k, v, backend=backend)
        return self.proj(rearrange(out, "b s h e -> b s (h e)"))


class PatchEmbed(nn.Module):
    """Holds the patch-embedding kernel ``proj`` (a ``Conv2d`` with kernel = stride = patch).

    Only the parameters live here (key names ``proj.weight`` ``"d c s s"``, ``proj.bias``);
    the embedding is computed by ``trajloom.encoding.patch_embed_cells`` (per-cell form)
    or ``patch_embed_dense`` (dense reference), so the module needs no forward.
    """

    def __init__(self, in_channels: int, embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """Fixed sin-cos embedding of 1D positions: ``"n"`` -> ``"n dim"``, float64.

    ``[sin(p * w_k), cos(p * w_k)]`` with ``w_k = 10000 ** (-k / (dim / 2))`` (sin first),
    the released ``get_1d_sincos_pos_embed_from_grid``.
    """
    if dim % 2:
        raise ValueError(f"sincos_1d: dim must be even, got {dim}")
    omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = np.einsum("m,d->md", np.asarray(positions).reshape(-1), omega)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> np.ndarray:
    """Fixed 2D sin-cos embedding of a row-major ``grid_h x grid_w`` grid: ``"(h w) dim"``.

    The first ``dim / 2`` channels embed the column (x) index and the last ``dim / 2`` the
    row (y) index: the released ``get_2d_sincos_pos_embed_hw`` numbers.
    """
    if dim % 4:
        raise ValueError(f"sincos_2d: dim must be a multiple of 4, got {dim}")
    xs, ys = np.meshgrid(
        np.arange(grid_w, dtype=np.float32), np.arange(grid_h, dtype=np.float32)
    )  # each "h w"
    return np.concatenate([sincos_1d(dim // 2, xs), sincos_1d(dim // 2, ys)], axis=1)


class LearnableFourierFeatures(nn.Module):
    """Learnable Fourier features of positions (Li et al. 2021), as released.

    ``scale * [cos(x W^T), sin(x W^T)]`` followed by an MLP back to ``embed_dim``. ``w``
    ``"(embed_dim/2) pos_dim"`` is drawn ``N(0, gamma^2 ... )`` once and kept frozen
    (``requires_grad=False``) but stored in the state dict, as in the release.
    """

    def __init__(self, pos_dim: int, embed_dim: int, mlp_dim: int, gamma: float = 1.0) -> None:
        super().__init__()
        if embed_dim % 2:
            raise ValueError(f"LearnableFourierFeatures: embed_dim must be even, got {embed_dim}")
        # gamma ** 2 (not gamma) multiplies the draw in the release; kept for equal init.
        self.w = nn.Parameter(torch.randn(embed_dim // 2, pos_dim) * gamma**2, requires_grad=False)
        self.mlp = Mlp(embed_dim, mlp_dim)
        self.scale = 1.0 / math.sqrt(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: "... pos_dim"`` -> ``"... embed_dim"``."""
        xw = x @ self.w.t()
        return self.mlp(self.scale * torch.cat([torch.cos(xw), torch.sin(xw)], dim=-1))
