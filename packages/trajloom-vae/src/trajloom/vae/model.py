"""TrajLoom-VAE (paper §3.2, appendix A.1): dense trajectory fields <-> compact latents.

Encoder: patch tokens of the grid-anchor offset field (one token per grid cell,
patch = stride), plus a fixed 2D sin-cos embedding and learnable Fourier features of
the patch centres; Latte-style blocks alternating spatial and temporal attention; a
1D time embedding before the first temporal block; temporal conv compression x4
with the first frame kept (81 -> 21) halfway through; a Linear to the posterior mean
and log-variance. The decoder mirrors it and ends in a per-token Linear to the
``s x s x 2`` offsets of the cell, plus the anchors.

The input path takes the per-cell form ``"b t n 2"`` (each grid point's normalized
track): since the released model's dense input is constant on each cell, its patch
embedding is computed with ``trajloom.encoding.patch_embed_cells`` and the
``480 x 832`` field is never built. :meth:`TrajLoomVAE.encode_dense` keeps the dense
path of the release for tests and compatibility checks.

Module names, parameter shapes, block order and initialization follow the released
``models/trajloom_vae.py`` so that its checkpoints load strictly.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from trajloom.encoding import (
    cell_anchors,
    check_tracks,
    check_visibility,
    denormalize,
    normalize,
    patch_embed_cells,
    patch_embed_dense,
    pixel_anchors,
)
from trajloom.vae.config import VAEConfig
from trajloom.vae.layers import (
    LearnableFourierFeatures,
    Mlp,
    PatchEmbed,
    SelfAttention,
    sincos_1d,
    sincos_2d,
)
from trajloom.vae.losses import VAELossConfig, VAELosses, vae_losses

__all__ = [
    "DiagonalGaussian",
    "TemporalCompressor",
    "TemporalExpander",
    "TrajLoomVAE",
    "VAEBlock",
    "VAEOutput",
    "patch_centers",
    "vae_flops",
]


@dataclass
class DiagonalGaussian:
    """The posterior ``q(z | x)``: a diagonal Gaussian over latents ``"b t n c"``.

    As released, the scale is ``softplus(0.5 * logvar) + 1e-8`` (not ``exp``), so
    ``logvar`` is only the name of the pre-activation.
    """

    mean: torch.Tensor  # "b t n c"
    logvar: torch.Tensor  # "b t n c"

    @property
    def std(self) -> torch.Tensor:
        return F.softplus(0.5 * self.logvar) + 1e-8

    def mode(self) -> torch.Tensor:
        return self.mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterized sample ``mean + std * eps``; ``eps`` from ``generator`` if given."""
        eps = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.std * eps

    def kl(self) -> torch.Tensor:
        """``KL(q || N(0, I))`` per element, ``"b t n c"`` (the closed form torch uses)."""
        var = self.std.pow(2)
        return 0.5 * (var + self.mean.pow(2) - 1 - var.log())


@dataclass
class VAEOutput:
    """What :meth:`TrajLoomVAE.forward` returns."""

    recon: torch.Tensor  # "b t n (p q) 2" normalized absolute coordinates, patch layout
    posterior: DiagonalGaussian
    z: torch.Tensor  # "b t' n c" the latent that was decoded
    losses: VAELosses | None = None  # when visibility was given


class TemporalCompressor(nn.Module):
    """T -> 1 + (T - 1) / f: replicate-pad f - 1 frames each side, Conv1d(k = 2f - 1, stride f)."""

    def __init__(self, hidden_size: int, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.conv = nn.Conv1d(hidden_size, hidden_size, kernel_size=2 * factor - 1, stride=factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``"b t n d"`` -> ``"b t' n d"``."""
        b = x.shape[0]
        y = rearrange(x, "b t n d -> (b n) d t")
        # Replicate padding keeps the boundary frames from being pulled towards zero.
        y = self.conv(F.pad(y, (self.factor - 1, self.factor - 1), mode="replicate"))
        # back to the residual stream's dtype (the conv runs in bf16 under autocast)
        return rearrange(y, "(b n) d t -> b t n d", b=b).to(x.dtype)


class TemporalExpander(nn.Module):
    """T' -> T: replicate-pad f - 1 latent steps, ConvTranspose1d(k 2f - 1, stride f, pad f - 1), crop."""

    def __init__(self, hidden_size: int, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.deconv = nn.ConvTranspose1d(
            hidden_size,
            hidden_size,
            kernel_size=2 * factor - 1,
            stride=factor,
            padding=factor - 1,
        )

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """``"b t' n d"`` -> ``"b t n d"`` with ``t = num_frames``."""
        b = x.shape[0]
        pad = self.factor - 1
        y = self.deconv(F.pad(rearrange(x, "b t n d -> (b n) d t"), (pad, pad), mode="replicate"))
        # The padded latent steps map to pad * factor extra frames on the left.
        start = pad * self.factor
        y = y[..., start : start + num_frames]
        return rearrange(y, "(b n) d t -> b t n d", b=b).to(x.dtype)


class VAEBlock(nn.Module):
    """Latte-style block: ``x += gate_msa * Attn(RMSNorm(x)); x += gate_mlp * Mlp(RMSNorm(x))``.

    ``norm2`` is never used: the release keeps it for checkpoint compatibility and so
    do we. Gates are per channel and start at zero, so every block starts as identity.
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(hidden_size, eps=1e-6)
        self.attn = SelfAttention(hidden_size, num_heads, qkv_bias=True)
        self.norm2 = nn.RMSNorm(hidden_size, eps=1e-6)
        # Frozen: it never sees a gradient, and DDP refuses trainable unused parameters.
        self.norm2.weight.requires_grad_(False)
        self.norm3 = nn.RMSNorm(hidden_size, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.gate_msa = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.gate_mlp = nn.Parameter(torch.zeros(1, 1, hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``"b s d"`` -> ``"b s d"``."""
        x = x + self.gate_msa * self.attn(self.norm1(x))
        return x + self.gate_mlp * self.mlp(self.norm3(x))


def _no_autocast(device_type: str) -> contextlib.AbstractContextManager:
    """Disable autocast on ``device_type`` if it is on (meta tensors have no autocast)."""
    if device_type in ("cpu", "cuda", "xpu", "mps") and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _xavier_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def patch_centers(
    config: VAEConfig,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Normalized ``(x, y)`` centres of the patches, ``"n 2"`` (the released arithmetic)."""
    spec = config.grid
    gh, gw = spec.grid_h, spec.grid_w
    rows, cols = torch.meshgrid(
        torch.linspace(0.5, gh - 0.5, gh, device=device),
        torch.linspace(0.5, gw - 0.5, gw, device=device),
        indexing="ij",
    )
    centers = torch.stack([cols * (spec.width / gw), rows * (spec.height / gh)], dim=-1)
    scale = torch.tensor([spec.width, spec.height], device=device)
    return ((centers.reshape(-1, 2) / scale) * 2.0 - 1.0).to(dtype)


class TrajLoomVAE(nn.Module):
    """TrajLoom-VAE. Inputs and outputs are normalized absolute coordinates ``2 p / [W, H] - 1``.

    Shapes: ``t = config.num_frames``, ``t' = config.latent_frames``, ``n`` grid points,
    ``c = config.latent_channels``, ``(p q)`` the ``s x s`` pixels of a cell, row-major.
    """

    offset_anchor_grid: torch.Tensor | None
    temp_compressor: TemporalCompressor | None
    temp_expander: TemporalExpander | None

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.gradient_checkpointing = config.gradient_checkpointing
        spec = config.grid
        d = config.hidden_size
        # Construction order follows the release, so that one seed gives the same init.
        if config.use_offsets:
            # Unused by the per-cell path; kept (persistent) because released checkpoints hold it.
            self.register_buffer("offset_anchor_grid", pixel_anchors(spec)[None, None])
        else:
            self.offset_anchor_grid = None
        if config.temporal_compression:
            self.temp_compressor = TemporalCompressor(d, config.temporal_factor)
            self.temp_expander = TemporalExpander(d, config.temporal_factor)
        else:
            self.temp_compressor = None
            self.temp_expander = None
        self.x_embedder = PatchEmbed(2, d, config.grid.stride)
        self.patch_pos_lff = LearnableFourierFeatures(
            2, config.pos_embed_dim, 4 * config.pos_embed_dim
        )
        self.patch_pos_proj = nn.Linear(config.pos_embed_dim, d)
        self.to_latents = nn.Linear(d, 2 * config.latent_channels)
        self.from_latents = nn.Linear(config.latent_channels, d)
        # Fixed embeddings, stored as frozen parameters as in the release (so they are in
        # its checkpoints).
        self.pos_embed = nn.Parameter(torch.zeros(1, spec.num_points, d), requires_grad=False)
        self.temp_embed_in = nn.Parameter(torch.zeros(1, config.num_frames, d), requires_grad=False)
        self.encoder_blocks = nn.ModuleList(
            VAEBlock(d, config.num_heads, config.mlp_ratio) for _ in range(config.encoder_depth)
        )
        self.decoder_blocks = nn.ModuleList(
            VAEBlock(d, config.num_heads, config.mlp_ratio) for _ in range(config.decoder_depth)
        )
        self.final_layer = nn.Linear(d, spec.stride * spec.stride * 2)
        self.initialize_weights()

    def compile_blocks(self, **compile_kwargs: Any) -> TrajLoomVAE:
        """Compile each encoder and decoder block in place (regional compilation).

        Fuses the elementwise work around the matmuls per block; weights, state-dict keys
        and checkpoints are unchanged. ``compile_kwargs`` go to :func:`torch.compile`.
        """
        for block in (*self.encoder_blocks, *self.decoder_blocks):
            block.compile(**compile_kwargs)
        return self

    def initialize_weights(self) -> None:
        """The released initialization."""
        self.apply(_xavier_linear)
        # The patch kernel is a Linear over the flattened (c, p, q) patch.
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        bias = self.x_embedder.proj.bias
        assert bias is not None  # PatchEmbed's Conv2d is built with a bias
        nn.init.zeros_(bias)
        spec = self.config.grid
        pos = sincos_2d(self.config.hidden_size, spec.grid_h, spec.grid_w)
        self.pos_embed.data.copy_(torch.from_numpy(pos).float()[None])
        frames = np.arange(self.config.num_frames, dtype=np.float32)
        temp = sincos_1d(self.config.hidden_size, frames)
        self.temp_embed_in.data.copy_(torch.from_numpy(temp).float()[None])
        # Zero output layer: the initial reconstruction is the anchor grid itself.
        nn.init.zeros_(self.final_layer.weight)
        nn.init.zeros_(self.final_layer.bias)

    # ------------------------------------------------------------------ blocks
    def _block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, x, use_reentrant=False)
        return block(x)

    def _run_stage(
        self, x: torch.Tensor, blocks: list[nn.Module], add_time_embed: bool
    ) -> torch.Tensor:
        """Blocks alternating spatial (even index) and temporal (odd) attention; ``"b t n d"``.

        The time embedding is added once, before the stage's first temporal block.
        """
        b, t = x.shape[:2]
        for i in range(0, len(blocks), 2):
            x = rearrange(x, "b t n d -> (b t) n d")
            x = self._block(blocks[i], x)
            x = rearrange(x, "(b t) n d -> b t n d", b=b)
            if i + 1 < len(blocks):
                x = rearrange(x, "b t n d -> (b n) t d")
                if add_time_embed and i == 0:
                    x = x + self.temp_embed_in[:, :t]
                x = self._block(blocks[i + 1], x)
                x = rearrange(x, "(b n) t d -> b t n d", b=b)
        return x

    # ------------------------------------------------------------------ encoder
    def _check_values(self, values: torch.Tensor, name: str) -> None:
        c = self.config
        if values.dim() != 4 or tuple(values.shape[1:]) != (c.num_frames, c.num_tokens, 2):
            raise ValueError(
                f"{name} must be 'b t n 2' with t={c.num_frames}, n={c.num_tokens} for this VAE "
                f"({c.grid.width}x{c.grid.height}, stride {c.grid.stride}), got shape {tuple(values.shape)}"
            )

    def _position_terms(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Fixed sin-cos and Fourier-feature embeddings of each token's position, ``"n d"`` each."""
        centers = patch_centers(self.config, device=self.pos_embed.device, dtype=dtype)
        lff = self.patch_pos_proj(self.patch_pos_lff(centers))
        return self.pos_embed[0].to(dtype), lff

    def _encode_tokens(self, x: torch.Tensor) -> DiagonalGaussian:
        """Patch embeddings ``"b t n d"`` -> posterior over ``"b t' n c"``."""
        pos, lff = self._position_terms(x.dtype)
        x = x + pos
        x = x + lff
        blocks = list(self.encoder_blocks)
        if self.temp_compressor is None:
            x = self._run_stage(x, blocks, add_time_embed=True)
        else:
            mid = len(blocks) // 2
            x = self._run_stage(x, blocks[:mid], add_time_embed=True)
            x = self.temp_compressor(x)
            x = self._run_stage(x, blocks[mid:], add_time_embed=False)
        mean, logvar = self.to_latents(x).chunk(2, dim=-1)
        return DiagonalGaussian(mean, logvar)

    def encode(self, values: torch.Tensor) -> DiagonalGaussian:
        """Per-cell input ``"b t n 2"`` (normalized absolute coordinates) -> posterior.

        Equal (to float rounding) to the released encoder on the rasterized field, without
        building the field: see :meth:`encode_dense`.
        """
        self._check_values(values, "values")
        proj = self.x_embedder.proj
        assert proj.bias is not None  # PatchEmbed's Conv2d is built with a bias
        # fp32 even under autocast: the per-cell form subtracts the anchors' embedding
        # after the matmul, so a bf16 matmul would cancel away the small offsets. The
        # cost is negligible (a 2 -> d map per token).
        with _no_autocast(values.device.type):
            x = patch_embed_cells(
                values.float(),
                proj.weight.float(),
                proj.bias.float(),
                self.config.grid,
                offsets=self.config.use_offsets,
            )
        return self._encode_tokens(x)

    def encode_dense(self, field: torch.Tensor) -> DiagonalGaussian:
        """The released input path: dense field ``"b t 2 h w"`` -> posterior (reference)."""
        c = self.config
        if field.dim() != 5 or tuple(field.shape[1:]) != (
            c.num_frames,
            2,
            c.grid.height,
            c.grid.width,
        ):
            raise ValueError(
                f"field must be 'b t 2 h w' = (b, {c.num_frames}, 2, {c.grid.height}, {c.grid.width}), "
                f"got shape {tuple(field.shape)}"
            )
        if self.offset_anchor_grid is not None:
            field = field - self.offset_anchor_grid.to(field.dtype)
        b = field.shape[0]
        proj = self.x_embedder.proj
        x = patch_embed_dense(
            rearrange(field, "b t c h w -> (b t) c h w"), proj.weight, proj.bias, c.grid
        )
        return self._encode_tokens(rearrange(x, "(b t) n d -> b t n d", b=b))

    def encode_tracks(self, tracks: torch.Tensor) -> DiagonalGaussian:
        """Pixel tracks ``"b t n 2"`` of the grid points -> posterior."""
        check_tracks(tracks, "tracks", spec=self.config.grid, min_ndim=4)
        return self.encode(normalize(tracks, self.config.grid))

    # ------------------------------------------------------------------ decoder
    def _decode_tokens(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``"b t' n c"`` -> decoder features ``"b t n d"``."""
        c = self.config
        if z.dim() != 4 or tuple(z.shape[1:]) != (c.latent_frames, c.num_tokens, c.latent_channels):
            raise ValueError(
                f"z must be 'b t n c' = (b, {c.latent_frames}, {c.num_tokens}, {c.latent_channels}), "
                f"got shape {tuple(z.shape)}"
            )
        # The residual stream in the parameters' dtype (fp32 under autocast), as in the encoder.
        x = self.from_latents(z).to(self.from_latents.weight.dtype)
        blocks = list(self.decoder_blocks)
        if self.temp_expander is None:
            return self._run_stage(x, blocks, add_time_embed=False)
        mid = len(blocks) // 2
        x = self._run_stage(x, blocks[:mid], add_time_embed=False)
        x = self.temp_expander(x, c.num_frames)
        return self._run_stage(x, blocks[mid:], add_time_embed=False)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``"b t' n c"`` -> normalized absolute coordinates ``"b t n (p q) 2"``, unclamped.

        With offsets the result is float32 even when the network runs in bf16.

        The final Linear's ``p * p * 2`` outputs are ordered (row, column, xy) inside the
        cell: the order of the released ``unpatchify``.
        """
        out = rearrange(self.final_layer(self._decode_tokens(z)), "b t n (k c) -> b t n k c", c=2)
        if self.config.use_offsets:
            # fp32 anchors: absolute coordinates in bf16 would be ~1 px coarse at 832 px.
            out = out + cell_anchors(self.config.grid, device=out.device)
        return out

    def decode_query(self, z: torch.Tensor) -> torch.Tensor:
        """Latents -> normalized coordinates at the query pixels only, ``"b t n 2"``, unclamped.

        Equals ``decode(z)[..., 0, :]`` but evaluates only the two output rows of the
        top-left pixel of each cell, the query pixel ``(j s, i s)``.
        """
        w, bias = self.final_layer.weight[:2], self.final_layer.bias[:2]
        out = F.linear(self._decode_tokens(z), w, bias)
        if self.config.use_offsets:
            out = out + cell_anchors(self.config.grid, device=out.device)[:, 0]
        return out

    def decode_tracks(self, z: torch.Tensor) -> torch.Tensor:
        """Latents -> pixel tracks ``"b t n 2"``: clamp to [-1, 1], denormalize, read the query pixel."""
        return denormalize(self.decode_query(z).clamp(-1.0, 1.0), self.config.grid)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        values: torch.Tensor,
        visibility: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        *,
        sample: bool = True,
        loss_config: VAELossConfig | None = None,
    ) -> VAEOutput:
        """Encode, sample (or take the mean), decode; with ``visibility``, also the losses.

        Args:
            values: ``"b t n 2"`` normalized absolute coordinates of the grid points.
            visibility: ``"b t n"`` bool, or None to skip the losses.
            generator: randomness for the posterior sample.
            sample: False decodes the posterior mean (deterministic).
            loss_config: a ``trajloom.vae.losses.VAELossConfig``; default uses ``config.beta``
                and the paper's weights.
        """
        posterior = self.encode(values)
        z = posterior.sample(generator) if sample else posterior.mean
        recon = self.decode(z)
        losses = None
        if visibility is not None:
            check_visibility(visibility, tuple(values.shape), "visibility")
            cfg = loss_config if loss_config is not None else VAELossConfig(beta=self.config.beta)
            losses = vae_losses(recon, values, visibility, posterior, self.config.grid, cfg)
        return VAEOutput(recon=recon, posterior=posterior, z=z, losses=losses)


def vae_flops(config: VAEConfig, batch: int = 1) -> int:
    """Forward FLOPs (2 per multiply-add) of encode + decode of ``batch`` clips.

    Counts the matmuls (block linears, attention scores and values, temporal convs,
    latent projections, output layer); norms, activations and the per-cell patch
    embedding are negligible. Forward + backward is about 3x this (4x with
    activation checkpointing).
    """
    d, n, c = config.hidden_size, config.num_tokens, config.latent_channels
    t, t_lat = config.num_frames, config.latent_frames
    mlp = int(d * config.mlp_ratio)
    k = 2 * config.temporal_factor - 1

    def stage(num_blocks: int, frames: int) -> int:
        tokens = batch * frames * n
        flops = 0
        for i in range(num_blocks):
            seq = n if i % 2 == 0 else frames  # spatial, then temporal attention
            flops += 2 * tokens * (4 * d * d + 2 * d * mlp) + 4 * tokens * seq * d
        return flops

    enc, dec = config.encoder_depth, config.decoder_depth
    if config.temporal_compression:
        blocks = stage(enc // 2, t) + stage(enc - enc // 2, t_lat)
        blocks += stage(dec // 2, t_lat) + stage(dec - dec // 2, t)
        pad = config.temporal_factor - 1
        convs = 2 * batch * n * d * d * k * (t_lat + (t_lat + 2 * pad))
    else:
        blocks = stage(enc, t) + stage(dec, t)
        convs = 0
    heads = 2 * batch * t_lat * n * (d * 2 * c + c * d)
    out = 2 * batch * t * n * d * config.grid.stride * config.grid.stride * 2
    return blocks + convs + heads + out
