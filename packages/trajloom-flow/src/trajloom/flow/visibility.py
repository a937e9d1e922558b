"""The visibility head: future visibility from generated latents (paper appendix E.3).

A small per-token temporal network over the (normalized) future latents ``"b t n c"``:
a per-token Linear, ``depth x [Conv1d(k, pad k // 2), SiLU]`` along the latent steps, and
a 1x1 Conv1d to one logit per latent step. It is trained with BCE against the max-pooled
frame visibility (:func:`visibility_targets`); at inference the probabilities are repeated
``factor`` times in time, cropped to the frame count, thresholded, and points outside the
image are forced invisible (:func:`predict_visibility`).

Parameter names follow the released ``models/visibility_predictor.py`` (``in_proj``,
``temporal_net.{0,2,4}``, ``out``), so released checkpoints load strictly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from trajloom.encoding import DEFAULT_TEMPORAL_FACTOR, GridSpec
from trajloom.flow.model import latent_visibility

if TYPE_CHECKING:
    from trajloom.vae.config import VAEConfig

__all__ = [
    "VisibilityConfig",
    "VisibilityPredictor",
    "inside_image",
    "predict_visibility",
    "upsample_visibility",
    "visibility_loss",
    "visibility_targets",
]


@dataclass(frozen=True)
class VisibilityConfig:
    """Architecture of the visibility head (released ``predictor`` section) and its read-out."""

    latent_channels: int = 16
    hidden: int = 64  # channels of the temporal conv stack
    depth: int = 3  # Conv1d + SiLU blocks
    kernel_size: int = 3  # odd, so that padding k // 2 keeps the number of steps
    use_hist_last: bool = False  # also feed the last history latent of each token
    use_delta_to_hist: bool = False  # and the difference to it (needs use_hist_last)
    temporal_factor: int = DEFAULT_TEMPORAL_FACTOR  # frames per latent step (targets, upsampling)
    threshold: float = 0.5  # probability above which a point is visible

    def __post_init__(self) -> None:
        for name in ("latent_channels", "hidden", "kernel_size", "temporal_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"VisibilityConfig.{name} must be a positive int, got {value!r}")
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 0:
            raise ValueError(f"VisibilityConfig.depth must be an int >= 0, got {self.depth!r}")
        if self.kernel_size % 2 == 0:
            raise ValueError(
                f"VisibilityConfig.kernel_size={self.kernel_size} must be odd: padding k // 2 "
                "keeps the number of latent steps only for odd kernels"
            )
        if self.use_delta_to_hist and not self.use_hist_last:
            raise ValueError(
                "VisibilityConfig.use_delta_to_hist needs use_hist_last=True (the delta is to "
                "the last history latent)"
            )
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"VisibilityConfig.threshold must be in (0, 1), got {self.threshold}")

    def for_vae(self, vae: VAEConfig) -> VisibilityConfig:
        """This head on ``vae``'s latents: its latent channels and frames per latent step."""
        return replace(
            self, latent_channels=vae.latent_channels, temporal_factor=vae.frames_per_latent
        )

    @property
    def in_features(self) -> int:
        """Per-token input width: C, plus C for the last history latent, plus C for the delta."""
        return self.latent_channels * (1 + int(self.use_hist_last) + int(self.use_delta_to_hist))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VisibilityConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"VisibilityConfig.from_dict: unknown keys {unknown}; known keys are {sorted(known)}"
            )
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> VisibilityConfig:
        return cls.from_dict(json.loads(text))


class VisibilityPredictor(nn.Module):
    """Visibility logits per latent step and token from future latents."""

    def __init__(self, config: VisibilityConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.in_proj = nn.Linear(c.in_features, c.hidden)
        layers: list[nn.Module] = []
        for _ in range(c.depth):
            layers += [
                nn.Conv1d(
                    c.hidden, c.hidden, kernel_size=c.kernel_size, padding=c.kernel_size // 2
                ),
                nn.SiLU(),
            ]
        self.temporal_net = nn.Sequential(*layers)
        self.out = nn.Conv1d(c.hidden, 1, kernel_size=1)

    def forward(self, z_fut: torch.Tensor, z_hist: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``"b t n"`` for normalized future latents ``z_fut: "b t n c"``.

        ``z_hist: "b th n c"`` is needed only with ``use_hist_last`` (its last step is used).
        """
        c = self.config
        if z_fut.dim() != 4 or z_fut.shape[-1] != c.latent_channels:
            raise ValueError(
                f"z_fut must be 'b t n c' with c={c.latent_channels}, got {tuple(z_fut.shape)}"
            )
        b, t, n, _ = z_fut.shape
        feats = z_fut
        if c.use_hist_last:
            if (
                z_hist is None
                or z_hist.dim() != 4
                or z_hist.shape[0] != b
                or z_hist.shape[2:] != z_fut.shape[2:]
            ):
                raise ValueError(
                    "use_hist_last=True needs z_hist 'b th n c' matching z_fut "
                    f"{tuple(z_fut.shape)}, got {None if z_hist is None else tuple(z_hist.shape)}"
                )
            last = z_hist[:, -1:].expand(b, t, n, c.latent_channels)
            parts = [z_fut, last]
            if c.use_delta_to_hist:
                parts.append(z_fut - last)
            feats = torch.cat(parts, dim=-1)
        # One sequence per token; the Linear runs before the transpose to channels-first.
        h = self.in_proj(rearrange(feats, "b t n c -> (b n) t c"))
        h = self.temporal_net(h.transpose(1, 2))  # "(b n) hidden t"
        logits = self.out(h)  # "(b n) 1 t"
        return rearrange(logits, "(b n) 1 t -> b t n", b=b)


def visibility_targets(vis: torch.Tensor, factor: int = DEFAULT_TEMPORAL_FACTOR) -> torch.Tensor:
    """BCE targets: frame visibility ``"b T n"`` max-pooled over blocks of ``factor`` frames.

    ``"b t' n"`` float, ``t' = ceil(T / factor)`` (81 -> 21); the same pooling as the
    generator's latent visibility (:func:`trajloom.flow.model.latent_visibility`).
    """
    return latent_visibility(vis, factor)


def visibility_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    pos_weight: float | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean binary cross-entropy with logits; ``logits, targets: "b t n"``.

    ``pos_weight`` weights the visible class (None or 0: unweighted, as in the released
    config's ``pos_weight: 0.0``); ``mask: "b t n"`` restricts the mean to its nonzero
    entries (e.g. to drop padded samples).
    """
    if logits.shape != targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must have one shape"
        )
    weight = None
    if pos_weight:
        weight = torch.tensor(pos_weight, device=logits.device, dtype=logits.dtype)
    loss = F.binary_cross_entropy_with_logits(
        logits, targets.to(logits.dtype), pos_weight=weight, reduction="none"
    )
    if mask is None:
        return loss.mean()
    mask = mask.to(loss.dtype)
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)


def upsample_visibility(
    probs: torch.Tensor, num_frames: int, factor: int = DEFAULT_TEMPORAL_FACTOR
) -> torch.Tensor:
    """Latent-step values ``"b t' n"`` -> frame values ``"b T n"``: each step repeated ``factor``x.

    Then cropped to ``num_frames`` (21 x 4 = 84 -> 81), as released.
    """
    if probs.dim() != 3:
        raise ValueError(f"probs must be 'b t n', got shape {tuple(probs.shape)}")
    if probs.shape[1] * factor < num_frames:
        raise ValueError(
            f"{probs.shape[1]} latent steps x factor {factor} cover fewer than num_frames="
            f"{num_frames} frames"
        )
    return probs.repeat_interleave(factor, dim=1)[:, :num_frames]


def inside_image(tracks: torch.Tensor, spec: GridSpec) -> torch.Tensor:
    """``tracks: "... 2"`` pixels -> bool ``"..."``: finite and within ``[0, W-1] x [0, H-1]``.

    The released out-of-bounds rule (``_apply_oob_mask_to_vis``).
    """
    x, y = tracks[..., 0], tracks[..., 1]
    return (
        torch.isfinite(x)
        & torch.isfinite(y)
        & (x >= 0)
        & (x <= spec.width - 1)
        & (y >= 0)
        & (y <= spec.height - 1)
    )


@torch.no_grad()
def predict_visibility(
    model: VisibilityPredictor,
    z_fut: torch.Tensor,
    *,
    num_frames: int,
    tracks: torch.Tensor | None = None,
    spec: GridSpec | None = None,
    z_hist: torch.Tensor | None = None,
    threshold: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame visibility of generated futures: (bool ``"b T n"``, probabilities ``"b T n"``).

    ``z_fut: "b t n c"`` normalized generated latents (what the generator outputs). The
    logits' sigmoid is upsampled to ``num_frames``, thresholded at ``threshold`` (default
    the config's 0.5, strictly greater is visible); with ``tracks: "b T n 2"`` (decoded
    pixels, before any clipping) and ``spec``, points outside the image are forced
    invisible. The probabilities are returned unmasked.
    """
    param = next(model.parameters())
    logits = model(z_fut.to(param.dtype), z_hist.to(param.dtype) if z_hist is not None else None)
    probs = upsample_visibility(
        torch.sigmoid(logits.float()), num_frames, model.config.temporal_factor
    )
    vis = probs > (model.config.threshold if threshold is None else threshold)
    if tracks is not None:
        if spec is None:
            raise ValueError("predict_visibility: pass spec (GridSpec) together with tracks")
        if tuple(tracks.shape[:-1]) != tuple(vis.shape):
            raise ValueError(
                f"tracks must be 'b T n 2' = {(*vis.shape, 2)}, got {tuple(tracks.shape)}"
            )
        vis = vis & inside_image(tracks, spec)
    return vis, probs
