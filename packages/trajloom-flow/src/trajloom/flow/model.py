"""The TrajLoom-Flow generator: a velocity field over trajectory-VAE latents (paper §3.3).

A DiT whose tokens are the future latent tokens ``"b tf n c"`` (one per grid cell and
latent step). Blocks come in (spatial, temporal) pairs; each block is adaLN-modulated
self-attention, cross-attention to the history context, and an MLP, with one
conditioning vector per sample. The history context is the projected history track
latents (plus projected history visibility) and, concatenated along time, the projected
history video latents, with absolute time and segment embeddings. Before the blocks, the
token-aligned history fusion adds the last history context plus a velocity hint to each
future step (``add_last_plus_vel``).

Parameter names, shapes and formulas follow the released ``models/trajloom_generator.py``
so that released checkpoints load strictly (``trajloom.flow.released``). Differences from
the release are in how the numbers are computed, not in the numbers:

* adaLN is evaluated once per sample (the release repeats the conditioning vector per
  token group first), and the spatial cross-attention context, identical for every future
  step, is projected once per sample and attended by all steps' queries in one call.
* The per-block debug buffer ``last_gate_xattn_mean`` (non-persistent, not in the file)
  is not kept; :meth:`TrajLoomGenerator.xattn_gates` computes the same statistic.
* Every attention goes through ``trajloom.vae.attention.attention`` ("b s h d"); q and k
  are cast back to v's dtype after their RMSNorm, so that mixed precision (where autocast
  runs rms_norm in float32) hands one dtype to every kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from trajloom.encoding import DEFAULT_TEMPORAL_FACTOR
from trajloom.flow.config import GeneratorConfig
from trajloom.vae.attention import attention
from trajloom.vae.layers import Mlp

__all__ = [
    "CrossAttention",
    "FlowCondition",
    "GeneratorBlock",
    "SelfAttention",
    "TrajLoomGenerator",
    "block_mean_pool",
    "generator_flops",
    "generator_flops_breakdown",
    "latent_visibility",
    "modulate",
    "sinusoidal_embedding",
]

NORM_EPS = 1e-6  # every RMSNorm of the generator (released value)
MAX_PERIOD = 10000.0  # of the sinusoidal time and position embeddings


# -----------------------------------------------------------------------------
# Pure helpers
# -----------------------------------------------------------------------------


def sinusoidal_embedding(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``[cos(x w_k), sin(x w_k)]`` with ``w_k = exp(-ln(1e4) k / (dim / 2))``: ``"l"`` -> ``"l dim"``.

    Float32. Used for the flow time ``t`` in [0, 1] as is (not scaled by 1000) and for
    absolute frame positions, both as released (cos first; a zero column if dim is odd).
    """
    if x.dim() != 1:
        raise ValueError(f"sinusoidal_embedding expects a 1D tensor, got shape {tuple(x.shape)}")
    half = dim // 2
    freqs = torch.exp(
        -math.log(MAX_PERIOD) * torch.arange(0, half, device=x.device, dtype=torch.float32) / half
    )
    args = x.float().unsqueeze(1) * freqs.unsqueeze(0)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
    return emb


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation ``x * (1 + scale) + shift`` (shift, scale broadcast against x)."""
    return torch.addcmul(shift, x, 1.0 + scale)  # one fused kernel instead of two


def _rms(x: torch.Tensor) -> torch.Tensor:
    # RMSNorm without affine weight over the last dim (norm1, norm_xattn, norm2, final_norm).
    return F.rms_norm(x, (x.shape[-1],), eps=NORM_EPS)


def latent_visibility(vis: torch.Tensor, factor: int = DEFAULT_TEMPORAL_FACTOR) -> torch.Tensor:
    """Frame visibility -> latent-step visibility: any-visible over frame blocks.

    ``vis: "b T n"`` (bool or 0/1) -> ``"b t' n"`` float in {0, 1}, ``t' = ceil(T / factor)``:
    step k is visible if the point is visible in any frame of ``[k f, (k + 1) f)`` (the last
    block may be short: 81 frames -> 21 steps, the last from frame 80 alone). This is the
    released pooling; its second stage, any-visible over each ``stride x stride`` patch of
    the dense visibility raster, is the identity here because the raster copies each
    point's flag into its whole cell, so each patch holds one value.
    """
    if vis.dim() != 3:
        raise ValueError(f"vis must be 'b T n', got shape {tuple(vis.shape)}")
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    b, num_frames, n = vis.shape
    steps = -(-num_frames // factor)
    flags = vis.bool()
    pad = steps * factor - num_frames
    if pad:
        flags = torch.cat([flags, flags.new_zeros(b, pad, n)], dim=1)
    return rearrange(flags, "b (t f) n -> b t f n", f=factor).any(dim=2).float()


def block_mean_pool(x: torch.Tensor, pool: int) -> torch.Tensor:
    """Mean over ``pool x pool`` blocks of a grid with ceil semantics: ``"b h w d"`` -> ``"b h' w' d"``.

    Partial blocks at the bottom/right edge average only their real cells (the released
    deterministic pooling). Computed in float32, returned in ``x.dtype``.
    """
    if pool == 1:
        # Nothing to pool; the release still rounds through float32, which only float64
        # inputs notice. Kept so that float64 runs reproduce it.
        return x.float().to(x.dtype)
    b, h, w, d = x.shape
    ho, wo = -(-h // pool), -(-w // pool)
    padded = x.float().new_zeros(b, ho * pool, wo * pool, d)
    padded[:, :h, :w] = x.float()
    count = x.new_zeros(ho * pool, wo * pool, dtype=torch.float32)
    count[:h, :w] = 1.0
    sums = rearrange(padded, "b (i p) (j q) d -> b i j (p q) d", p=pool, q=pool).sum(dim=3)
    counts = rearrange(count, "(i p) (j q) -> i j (p q)", p=pool, q=pool).sum(dim=2)
    return (sums / counts.clamp_min(1.0)[None, :, :, None]).to(x.dtype)


# -----------------------------------------------------------------------------
# Conditioning inputs
# -----------------------------------------------------------------------------


@dataclass
class FlowCondition:
    """What the generator is conditioned on (all tensors batch-first).

    z_hist: ``"b th n c"`` normalized history track latents (per-channel latent stats).
    hist_vis: ``"b th n"`` latent-level history visibility in [0, 1]
        (:func:`latent_visibility`), or None: the model then sees zeros, which is what the
        released sampling script feeds it.
    video: ``"b th n cv"`` history video latents on the same token grid (Wan2.1 VAE of
        the history frames at 1/4 resolution: 21 x 15 x 26 x 16), or None (zeros).
    text: ``"b dt"`` pooled caption embedding (umT5 mean over tokens), or None (no term).
    """

    z_hist: torch.Tensor
    hist_vis: torch.Tensor | None = None
    video: torch.Tensor | None = None
    text: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.z_hist.shape[0])

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> FlowCondition:
        """A copy with every tensor moved to ``device`` and (floating ones) cast to ``dtype``."""

        def move_tensor(x: torch.Tensor) -> torch.Tensor:
            return x.to(device=device, dtype=dtype if x.is_floating_point() else None)

        def move(x: torch.Tensor | None) -> torch.Tensor | None:
            if x is None:
                return None
            return move_tensor(x)

        return FlowCondition(
            z_hist=move_tensor(self.z_hist),
            hist_vis=move(self.hist_vis),
            video=move(self.video),
            text=move(self.text),
        )

    def repeat_interleave(self, k: int) -> FlowCondition:
        """Each sample repeated ``k`` times along the batch (k futures per history)."""

        def rep(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.repeat_interleave(k, dim=0)

        return replace(
            self,
            z_hist=self.z_hist.repeat_interleave(k, dim=0),
            hist_vis=rep(self.hist_vis),
            video=rep(self.video),
            text=rep(self.text),
        )


# -----------------------------------------------------------------------------
# Layers
# -----------------------------------------------------------------------------


def _qk_norm(
    q: torch.Tensor, k: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    # RMSNorm over each head's vector, no affine. Under CUDA autocast rms_norm returns
    # float32 while v stays bfloat16; cast back so that every attention kernel (xformers
    # is not autocast-aware) sees one dtype.
    e = q.shape[-1]
    return F.rms_norm(q, (e,), eps=NORM_EPS).to(dtype), F.rms_norm(k, (e,), eps=NORM_EPS).to(dtype)


class SelfAttention(nn.Module):
    """Multi-head self-attention with QK RMSNorm (released keys ``qkv``, ``proj``).

    ``qkv``'s output is laid out ``(three heads head_dim)``, as released.
    """

    def __init__(self, dim: int, num_heads: int, *, qk_norm: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.qk_norm = qk_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: "b s d"`` -> ``"b s d"``."""
        b, seq, d = x.shape
        q, k, v = self.qkv(x).reshape(b, seq, 3, self.num_heads, self.head_dim).unbind(2)
        if self.qk_norm:
            q, k = _qk_norm(q, k, v.dtype)
        return self.proj(attention(q, k, v).reshape(b, seq, d))


class CrossAttention(nn.Module):
    """Multi-head cross-attention, queries from ``x`` and keys/values from ``context``.

    Keys ``q``, ``kv`` (output laid out ``(two heads head_dim)``), ``proj``; QK RMSNorm per
    head without affine weight, as released.
    """

    def __init__(self, dim: int, num_heads: int, *, qk_norm: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.qk_norm = qk_norm

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``x: "b g l d"``; ``context: "b g lc d"`` (one per group) or ``"b 1 lc d"`` (shared).

        A shared context is attended by all groups' queries in one call (``"b (g l)"``
        queries): the same numbers as attending per group, without copying the context.
        """
        b, g, seq, d = x.shape
        h, e = self.num_heads, self.head_dim
        q = self.q(x)
        kv = self.kv(context)
        if context.shape[1] == 1 and g != 1:
            q = q.reshape(b, g * seq, h, e)
            kv = kv.reshape(b, context.shape[2], 2, h, e)
        else:
            q = q.reshape(b * g, seq, h, e)
            kv = kv.reshape(b * g, context.shape[2], 2, h, e)
        k, v = kv.unbind(2)
        if self.qk_norm:
            q, k = _qk_norm(q, k, v.dtype)
        out = attention(q, k, v)
        return self.proj(out.reshape(b, g, seq, d))


class GeneratorBlock(nn.Module):
    """adaLN-Zero-style block with self-attention, cross-attention and MLP (released DiTBlock).

    ``x <- x + g_msa * Attn(mod(RMSNorm(x)))``,
    ``x <- x + g_x * XAttn(mod(RMSNorm(x)), ctx)`` (when a context is given),
    ``x <- x + g_mlp * MLP(mod(RMSNorm(x)))``, with the 9 (shift, scale, gate) chunks from
    ``adaLN = SiLU -> Linear(d, 9 d)`` of the conditioning vector.
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_hidden: int, *, qk_norm: bool) -> None:
        super().__init__()
        self.attn = SelfAttention(hidden_size, num_heads, qk_norm=qk_norm)
        self.xattn = CrossAttention(hidden_size, num_heads, qk_norm=qk_norm)
        self.mlp = Mlp(hidden_size, mlp_hidden)
        ada_linear = nn.Linear(hidden_size, 9 * hidden_size)
        self.adaLN = nn.Sequential(nn.SiLU(), ada_linear)
        # Start as the identity in the modulation (shift = scale = 0) with open gates (1) for
        # self-attention, cross-attention and MLP, as released.
        nn.init.zeros_(ada_linear.weight)
        with torch.no_grad():
            bias = ada_linear.bias.view(9, hidden_size)
            bias.zero_()
            bias[[2, 5, 8]] = 1.0

    def modulation(self, cond: torch.Tensor) -> torch.Tensor:
        """``cond: "b d"`` -> ``"9 b 1 1 d"``: (shift, scale, gate) x (msa, xattn, mlp)."""
        mod = self.adaLN(cond)
        return rearrange(mod, "b (k d) -> k b 1 1 d", k=9)

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor, context: torch.Tensor | None
    ) -> torch.Tensor:
        """``x: "b g l d"`` (attention over l within each group g); ``cond: "b d"``."""
        b, g, seq, d = x.shape
        sh_a, sc_a, g_a, sh_x, sc_x, g_x, sh_m, sc_m, g_m = self.modulation(cond)
        # gated residuals x + g * f as single addcmul kernels
        h = modulate(_rms(x), sh_a, sc_a)
        x = torch.addcmul(x, g_a, self.attn(h.reshape(b * g, seq, d)).reshape(b, g, seq, d))
        if context is not None:
            x = torch.addcmul(x, g_x, self.xattn(modulate(_rms(x), sh_x, sc_x), context))
        return torch.addcmul(x, g_m, self.mlp(modulate(_rms(x), sh_m, sc_m)))


# -----------------------------------------------------------------------------
# Generator
# -----------------------------------------------------------------------------


class TrajLoomGenerator(nn.Module):
    """Velocity field ``v(x_t, t | history)`` over normalized future latents (paper §3.3)."""

    # Buffers registered in __init__ (nn.Module.__getattr__ would type them Tensor | Module).
    abs_time_embed_hist: torch.Tensor
    abs_time_embed_fut: torch.Tensor

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        d, n = c.hidden_size, c.num_tokens
        self.activation_checkpointing = c.activation_checkpointing

        self.in_proj = nn.Linear(c.latent_channels, d)
        self.hist_track_proj = nn.Linear(c.latent_channels, d)
        self.hist_vis_proj: nn.Linear | None = None
        self.alpha_hist_vis: nn.Parameter | None = None
        if c.use_hist_vis_cond:
            # Zero-init: visibility enters the context without disturbing it at first.
            self.hist_vis_proj = nn.Linear(1, d)
            nn.init.zeros_(self.hist_vis_proj.weight)
            nn.init.zeros_(self.hist_vis_proj.bias)
            self.alpha_hist_vis = nn.Parameter(torch.tensor(float(c.hist_vis_scale_init)))
        self.hist_video_proj: nn.Linear | None = None
        self.alpha_video_ctx: nn.Parameter | None = None
        if c.use_video_cond:
            self.hist_video_proj = nn.Linear(c.video_latent_channels, d)
            self.alpha_video_ctx = nn.Parameter(torch.tensor(1.0))

        self.pos_embed = nn.Parameter(torch.zeros(1, n, d))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        # Absolute frame positions of the latent steps, so that the model knows the future
        # comes after the history: history 0, 4, ..., 80; future 81, 85, ..., 161.
        hist_pos = torch.arange(c.hist_latent_frames, dtype=torch.float32) * c.temporal_factor
        fut_start = c.num_frames - 1 if c.use_overlap else c.num_frames
        fut_pos = (
            fut_start + torch.arange(c.fut_latent_frames, dtype=torch.float32) * c.temporal_factor
        )
        self.register_buffer(
            "abs_time_embed_hist", sinusoidal_embedding(hist_pos, d), persistent=False
        )
        self.register_buffer(
            "abs_time_embed_fut", sinusoidal_embedding(fut_pos, d), persistent=False
        )
        self.seg_embed = nn.Parameter(torch.zeros(2, d))  # 0 = history context, 1 = future
        nn.init.trunc_normal_(self.seg_embed, std=0.02)

        self.time_mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d))
        self.text_proj = nn.Linear(c.text_embed_dim, d) if c.use_text_cond else None
        self.video_global_proj: nn.Linear | None = None
        self.beta_video_cond: nn.Parameter | None = None
        if c.use_video_cond:
            self.video_global_proj = nn.Linear(c.video_latent_channels, d)
            self.beta_video_cond = nn.Parameter(torch.tensor(1.0))
        self.track_global_proj = nn.Linear(2 * c.latent_channels, d)
        self.beta_track_cond = nn.Parameter(torch.tensor(1.0))

        # blocks[2k] is spatial and blocks[2k + 1] temporal (released order and key names).
        self.blocks = nn.ModuleList(
            GeneratorBlock(d, c.num_heads, c.mlp_hidden, qk_norm=c.qk_norm) for _ in range(c.depth)
        )
        self.out_proj = nn.Linear(d, c.latent_channels)

        self.track_fusion_scale = nn.Parameter(torch.tensor(float(c.track_fusion_scale_init)))
        self.track_fusion_gate_logit: nn.Parameter | None = None
        if c.track_fusion_use_time_gate:
            # sigmoid(gate) starts at 0.95 for the first future step and falls to 0.35 for
            # the last: the history says most about the near future.
            g0 = torch.linspace(0.95, 0.35, c.fut_latent_frames).clamp(1e-4, 1.0 - 1e-4)
            self.track_fusion_gate_logit = nn.Parameter(torch.log(g0) - torch.log1p(-g0))
        self.video_fusion_scale: nn.Parameter | None = None
        if c.use_video_cond and c.video_fusion != "none":
            self.video_fusion_scale = nn.Parameter(torch.tensor(float(c.video_fusion_scale_init)))

    # --- switches ---------------------------------------------------------------------
    def set_activation_checkpointing(self, enabled: bool = True) -> TrajLoomGenerator:
        """Recompute each block during backward instead of storing its activations."""
        self.activation_checkpointing = bool(enabled)
        return self

    def compile_blocks(self, **compile_kwargs: Any) -> TrajLoomGenerator:
        """Compile each block in place (regional compilation), for training and sampling.

        The elementwise work around the matmuls (adaLN modulation, norms, gates, residuals,
        layout copies) is fused per block, and the blocks share one compiled code. On an
        H200 this took the paper generator's training step from 1861 to 1113 ms (batch
        32, activation checkpointing, bf16; BENCHMARKS.md "GPU"). Weights, state-dict keys
        and checkpoints are unchanged. ``compile_kwargs`` go to :func:`torch.compile`.
        """
        for block in self.blocks:
            block.compile(**compile_kwargs)
        return self

    # --- inputs -----------------------------------------------------------------------
    def _check_inputs(self, x: torch.Tensor, t: torch.Tensor, cond: FlowCondition) -> torch.Tensor:
        c = self.config
        expect = (c.fut_latent_frames, c.num_tokens, c.latent_channels)
        if x.dim() != 4 or tuple(x.shape[1:]) != expect:
            raise ValueError(
                f"x must be 'b tf n c' = (b, {', '.join(map(str, expect))}) for this config, "
                f"got {tuple(x.shape)}"
            )
        b = x.shape[0]
        hist = (b, c.hist_latent_frames, c.num_tokens, c.latent_channels)
        if tuple(cond.z_hist.shape) != hist:
            raise ValueError(
                f"cond.z_hist must be 'b th n c' = {hist}, got {tuple(cond.z_hist.shape)}"
            )
        if cond.hist_vis is not None and tuple(cond.hist_vis.shape) != hist[:3]:
            raise ValueError(
                f"cond.hist_vis must be 'b th n' = {hist[:3]} (latent_visibility of the frame "
                f"visibility), got {tuple(cond.hist_vis.shape)}"
            )
        if cond.video is not None:
            if not c.use_video_cond:
                raise ValueError("cond.video was given but the config has use_video_cond=False")
            vshape = (*hist[:3], c.video_latent_channels)
            if tuple(cond.video.shape) != vshape:
                raise ValueError(
                    f"cond.video must be 'b th n cv' = {vshape} (video latents on the track token "
                    f"grid), got {tuple(cond.video.shape)}"
                )
        if cond.text is not None:
            if not c.use_text_cond:
                raise ValueError("cond.text was given but the config has use_text_cond=False")
            if tuple(cond.text.shape) != (b, c.text_embed_dim):
                raise ValueError(
                    f"cond.text must be 'b dt' = {(b, c.text_embed_dim)}, got {tuple(cond.text.shape)}"
                )
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(b)
        if tuple(t.shape) != (b,):
            raise ValueError(f"t must be a scalar or 'b' = ({b},), got {tuple(t.shape)}")
        return t

    # --- pieces of the forward pass, public for tests and analysis ---------------------
    def condition_vector(self, t: torch.Tensor, cond: FlowCondition) -> torch.Tensor:
        """The adaLN conditioning vector ``"b d"``.

        ``time_mlp(temb(t)) + text_proj(text) + beta_v * video_global_proj(mean z_video)
        + beta_tr * track_global_proj([mean_{t,n} z_hist, mean_n z_hist[:, -1]])``; the text
        term is absent without text, the video summary is zero without video.
        """
        dtype = cast(nn.Linear, self.time_mlp[0]).weight.dtype
        vec = self.time_mlp(sinusoidal_embedding(t, self.config.hidden_size).to(dtype))
        if self.text_proj is not None and cond.text is not None:
            vec = vec + self.text_proj(cond.text.to(dtype))
        b = vec.shape[0]
        if self.video_global_proj is not None:
            if cond.video is None:
                summary = vec.new_zeros(b, self.config.video_latent_channels)
            else:
                summary = cond.video.to(dtype).mean(dim=(1, 2))
            vec = vec + self.beta_video_cond * self.video_global_proj(summary)
        z_hist = cond.z_hist.to(dtype)
        track = torch.cat([z_hist.mean(dim=(1, 2)), z_hist[:, -1].mean(dim=1)], dim=-1)
        return vec + self.beta_track_cond * self.track_global_proj(track)

    def history_context(self, cond: FlowCondition) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(track context ``"b th n d"``, video context ``"b th n d"`` or None), before embeddings.

        Track context = ``hist_track_proj(z_hist) + alpha * hist_vis_proj(vis)`` (vis zeros
        when absent).
        """
        dtype = self.in_proj.weight.dtype
        z_hist = cond.z_hist.to(dtype)
        ctx_track = self.hist_track_proj(z_hist)
        if self.hist_vis_proj is not None:
            if cond.hist_vis is None:
                vis = z_hist.new_zeros(*z_hist.shape[:3], 1)
            else:
                vis = cond.hist_vis.to(dtype).unsqueeze(-1)
            ctx_track = ctx_track + self.alpha_hist_vis * self.hist_vis_proj(vis)
        ctx_video = None
        if self.hist_video_proj is not None:
            if cond.video is None:
                video = z_hist.new_zeros(*z_hist.shape[:3], self.config.video_latent_channels)
            else:
                video = cond.video.to(dtype)
            ctx_video = self.hist_video_proj(video)
        return ctx_track, ctx_video

    def history_fusion(
        self, ctx_track: torch.Tensor, ctx_video: torch.Tensor | None
    ) -> torch.Tensor | None:
        """What the token-aligned history fusion adds to the future tokens, ``"b tf n d"``.

        ``s * sigmoid(g_t) * (c_last + w_t (c_last - c_prev))``, ``w = linspace(0, 1, tf)``
        (``add_last`` drops the velocity term), plus the video fusion term when enabled.
        None when the fusion is switched off (``use_history_fusion=False``) and there is no
        video fusion.
        """
        c = self.config
        tf = c.fut_latent_frames
        gate: torch.Tensor | float = 1.0
        if self.track_fusion_gate_logit is not None:
            gate = torch.sigmoid(self.track_fusion_gate_logit).to(ctx_track.dtype).view(1, tf, 1, 1)
        added = None
        if c.use_history_fusion:
            last = ctx_track[:, -1:]
            if c.track_fusion == "add_last_plus_vel":
                w = torch.linspace(0.0, 1.0, tf, device=last.device, dtype=last.dtype)
                fused = last + w.view(1, tf, 1, 1) * (last - ctx_track[:, -2:-1])
            else:
                fused = last
            added = (self.track_fusion_scale * gate) * fused
        if self.video_fusion_scale is not None and ctx_video is not None:
            video_term = (self.video_fusion_scale * gate) * ctx_video[:, -1:]
            added = video_term if added is None else added + video_term
        return added

    def _contexts(
        self, ctx_track: torch.Tensor, ctx_video: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(temporal context ``"b n tc d"``, spatial context ``"b 1 lc d"`` or None)."""
        c = self.config
        th, d = c.hist_latent_frames, c.hidden_size
        if ctx_video is None:
            ctx, parts = ctx_track, 1
        else:
            # a video context comes from hist_video_proj, created together with alpha_video_ctx
            alpha_video = self.alpha_video_ctx
            assert alpha_video is not None
            if c.video_ctx_mode == "sum":
                ctx, parts = ctx_track + alpha_video * ctx_video, 1
            else:
                ctx, parts = torch.cat([ctx_track, alpha_video * ctx_video], dim=1), 2
        time_embed = self.abs_time_embed_hist.to(ctx.dtype)
        if parts == 2:
            time_embed = torch.cat([time_embed, time_embed], dim=0)
        ctx = ctx + time_embed[None, :, None, :]
        ctx = ctx + self.seg_embed[0].view(1, 1, 1, d)
        temporal = rearrange(ctx, "b t n d -> b n t d").contiguous()

        if c.spatial_ctx_mode == "none":
            return temporal, None
        if c.spatial_ctx_mode == "time_mean":
            return temporal, ctx.mean(dim=2).unsqueeze(1)
        last_k = min(c.spatial_ctx_last_k, th)
        selected = [ctx[:, th - last_k : th]]
        if parts == 2 and c.spatial_ctx_include_video:
            selected.append(ctx[:, 2 * th - last_k :])
        sel = torch.cat(selected, dim=1)  # "b k n d"
        k = sel.shape[1]
        grid = rearrange(sel, "b k (h w) d -> (b k) h w d", h=c.grid_h)
        tokens = rearrange(
            block_mean_pool(grid, c.spatial_ctx_pool), "(b k) i j d -> b k (i j) d", k=k
        )
        pos = rearrange(self.pos_embed.to(ctx.dtype), "1 (h w) d -> 1 h w d", h=c.grid_h)
        pos = rearrange(block_mean_pool(pos, c.spatial_ctx_pool), "1 i j d -> 1 1 (i j) d")
        spatial = rearrange(tokens + pos, "b k m d -> b 1 (k m) d")
        return temporal, spatial

    def _block(self, block: nn.Module, x, cond, context) -> torch.Tensor:
        if self.activation_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, cond, context, use_reentrant=False)
        return block(x, cond, context)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: FlowCondition) -> torch.Tensor:
        """Velocity ``"b tf n c"`` at state ``x: "b tf n c"`` and flow time ``t: "b"`` in [0, 1].

        ``t`` may also be a scalar (broadcast over the batch). Inputs are cast to the
        parameters' dtype.
        """
        t = self._check_inputs(x, t, cond)
        c = self.config
        d = c.hidden_size
        dtype = self.in_proj.weight.dtype
        h = self.in_proj(x.to(dtype))  # "b tf n d"
        ctx_track, ctx_video = self.history_context(cond)
        fused = self.history_fusion(ctx_track, ctx_video)
        if fused is not None:
            h = h + fused
        vec = self.condition_vector(t, cond)

        h = h + self.abs_time_embed_fut.to(dtype)[None, :, None, :]
        h = h + self.seg_embed[1].view(1, 1, 1, d)
        h = h + self.pos_embed.unsqueeze(1)
        ctx_temporal, ctx_spatial = self._contexts(ctx_track, ctx_video)

        for i in range(0, len(self.blocks), 2):
            spatial, temporal = self.blocks[i], self.blocks[i + 1]
            if c.temporal_first:
                h = rearrange(h, "b t n d -> b n t d").contiguous()
                h = self._block(temporal, h, vec, ctx_temporal)
                h = rearrange(h, "b n t d -> b t n d").contiguous()
                h = self._block(spatial, h, vec, ctx_spatial)
            else:
                h = self._block(spatial, h, vec, ctx_spatial)
                h = rearrange(h, "b t n d -> b n t d").contiguous()
                h = self._block(temporal, h, vec, ctx_temporal)
                h = rearrange(h, "b n t d -> b t n d").contiguous()
        return self.out_proj(_rms(h))

    @torch.no_grad()
    def xattn_gates(
        self, t: torch.Tensor, cond: FlowCondition
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean |cross-attention gate| of the spatial and of the temporal blocks (a diagnostic).

        The statistic the release logs from its ``last_gate_xattn_mean`` buffers.
        """
        t = torch.as_tensor(t, device=cond.z_hist.device)
        if t.dim() == 0:
            t = t.expand(cond.batch_size)
        vec = self.condition_vector(t, cond)
        gates = torch.stack(
            [cast(GeneratorBlock, blk).modulation(vec)[5].abs().mean() for blk in self.blocks]
        )
        return gates[0::2].mean(), gates[1::2].mean()


# -----------------------------------------------------------------------------
# FLOPs
# -----------------------------------------------------------------------------


def generator_flops_breakdown(config: GeneratorConfig, batch: int = 1) -> dict[str, int]:
    """Forward FLOPs of :class:`TrajLoomGenerator` by part, from shapes alone.

    Counted: every matmul (Linear layers: 2 x in x out per row) and the two attention
    matmuls (``q k^T`` and ``p v``: 2 x 2 x queries x keys x head_dim x heads), as this
    implementation computes them (adaLN once per sample; the shared spatial context
    projected once per sample). Not counted: norms, softmax, activations, additions,
    embeddings, pooling (all O(tokens x d), under 1% at the paper size).
    """
    c = config
    d, n, tf, th = c.hidden_size, c.num_tokens, c.fut_latent_frames, c.hist_latent_frames
    tokens = batch * tf * n
    hist_tokens = batch * th * n
    out: dict[str, int] = {}
    out["input"] = 2 * tokens * c.latent_channels * d
    ctx_flops = 2 * hist_tokens * c.latent_channels * d
    if c.use_hist_vis_cond:
        ctx_flops += 2 * hist_tokens * d
    if c.use_video_cond:
        ctx_flops += 2 * hist_tokens * c.video_latent_channels * d
    out["context"] = ctx_flops
    cond = 2 * batch * (d * 4 * d * 2)
    if c.use_text_cond:
        cond += 2 * batch * c.text_embed_dim * d
    if c.use_video_cond:
        cond += 2 * batch * c.video_latent_channels * d
    cond += 2 * batch * 2 * c.latent_channels * d
    cond += c.depth * 2 * batch * d * 9 * d  # adaLN
    out["condition"] = cond

    t_ctx = th * (2 if c.use_video_cond and c.video_ctx_mode == "concat" else 1)
    if c.spatial_ctx_mode == "none":
        s_ctx = 0
    elif c.spatial_ctx_mode == "time_mean":
        s_ctx = t_ctx
    else:
        pooled = -(-c.grid_h // c.spatial_ctx_pool) * -(-c.grid_w // c.spatial_ctx_pool)
        k = min(c.spatial_ctx_last_k, th)
        parts = (
            2
            if (c.use_video_cond and c.video_ctx_mode == "concat" and c.spatial_ctx_include_video)
            else 1
        )
        s_ctx = k * parts * pooled
    pairs = c.depth // 2
    linear = 2 * tokens * (3 * d * d + d * d)  # qkv + proj of self-attention
    linear += 2 * tokens * 2 * d * c.mlp_hidden  # MLP
    # q + proj of cross-attention: in every temporal block, in spatial blocks with a context
    xattn_blocks = pairs * (2 if s_ctx else 1)
    out["block_linear"] = c.depth * linear + xattn_blocks * 2 * tokens * 2 * d * d
    kv = 2 * (batch * n * t_ctx) * d * 2 * d  # temporal blocks: per-token history
    if s_ctx:
        kv_spatial = 2 * (batch * s_ctx) * d * 2 * d
    else:
        kv_spatial = 0
    out["cross_kv"] = pairs * (kv + kv_spatial)
    out["self_attention"] = pairs * (4 * batch * n * tf * tf * d + 4 * batch * tf * n * n * d)
    out["cross_attention"] = pairs * (4 * tokens * t_ctx * d + 4 * tokens * s_ctx * d)
    out["output"] = 2 * tokens * d * c.latent_channels
    return out


def generator_flops(config: GeneratorConfig, batch: int = 1) -> int:
    """Total forward FLOPs of one generator call on ``batch`` samples (see the breakdown).

    Training step FLOPs are about 3x this (backward = 2x forward), 4x with activation
    checkpointing (one more forward).
    """
    return sum(generator_flops_breakdown(config, batch).values())
