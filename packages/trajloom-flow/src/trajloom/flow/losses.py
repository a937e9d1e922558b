"""Flow-matching objective of TrajLoom-Flow (paper §3.3.2, eq. 9, app. A.2).

* Visibility-weighted token loss (eq. 9): each latent token ``(t, n)`` gets the weight
  ``w = v + ρ (1 - v)`` with ``v`` the future visibility pooled onto the latent grid
  (any-visible over each block of 4 frames) and ``ρ = 0.01`` for invisible tokens
  (released ``fm_invis_weight``); the weights are normalized over the batch,
  ``L = Σ w_k ||v̂_k - u_k||² / C / Σ w_k``.
* Flow-time mixture (app. A.2, released ``t_small_prob``, ``t_small_max``): with probability
  ``t_small_prob`` (0.2), ``t ~ U(0, t_small_max)`` (0.1) — extra weight on the start of
  the path, where the model must move away from the anchored source state; otherwise
  logit-normal ``t = sigmoid(N(0, 1))`` as in WHN and Movie Gen [2, 30]. Both are clamped
  to ``[t_eps, 1 - t_eps]`` (1e-5, the clamp the released sampler applies).
* Tube noise (released ``fm_sigma`` 0.05): ``x_t`` gets ``+ σ ε`` (see :mod:`.path`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from trajloom.flow.path import draw_source, interpolate, velocity_target

__all__ = [
    "FlowLossConfig",
    "FlowLossOutput",
    "flow_matching_loss",
    "sample_flow_time",
    "token_squared_error",
    "token_weights",
    "weighted_token_mse",
]


@dataclass(frozen=True)
class FlowLossConfig:
    """Settings of the flow-matching stage; defaults are the released ``train`` section."""

    use_visibility_weights: bool = True  # released fm_use_vis_mask
    invisible_weight: float = 0.01  # released fm_invis_weight: invisible tokens count a little
    sigma: float = 0.05  # released fm_sigma: width of the Gaussian tube around the path
    t_small_prob: float = 0.2  # released t_small_prob: share of t drawn from U(0, t_small_max)
    t_small_max: float = 0.1  # released t_small_max
    logit_mean: float = 0.0  # logit-normal location of the other t draws
    logit_std: float = 1.0  # logit-normal scale
    t_eps: float = 1e-5  # t is clamped to [t_eps, 1 - t_eps]
    anchor: bool = True  # boundary anchoring of the source; False is the "w/o anchoring" ablation
    anchor_std: float = 0.1  # released x0_noise_std
    anchor_slices: int = 1  # future latent steps anchored ("anchor_first": 1)

    def __post_init__(self) -> None:
        if not 0.0 <= self.invisible_weight <= 1.0:
            raise ValueError(
                f"FlowLossConfig.invisible_weight must be in [0, 1], got {self.invisible_weight}"
            )
        if self.sigma < 0 or self.anchor_std < 0 or self.logit_std <= 0:
            raise ValueError(
                "FlowLossConfig: sigma and anchor_std must be >= 0 and logit_std > 0, got "
                f"{self.sigma}, {self.anchor_std}, {self.logit_std}"
            )
        if not 0.0 <= self.t_small_prob <= 1.0:
            raise ValueError(
                f"FlowLossConfig.t_small_prob must be in [0, 1], got {self.t_small_prob}"
            )
        if not 0.0 < self.t_small_max <= 1.0:
            raise ValueError(
                f"FlowLossConfig.t_small_max must be in (0, 1], got {self.t_small_max}"
            )
        if not 0.0 <= self.t_eps < 0.5:
            raise ValueError(f"FlowLossConfig.t_eps must be in [0, 0.5), got {self.t_eps}")
        if isinstance(self.anchor_slices, bool) or self.anchor_slices < 1:
            raise ValueError(
                f"FlowLossConfig.anchor_slices must be a positive int, got {self.anchor_slices!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FlowLossConfig:
        return cls(**d)

    @classmethod
    def from_released(cls, train: dict[str, Any]) -> FlowLossConfig:
        """Read the released config's ``train`` section (its other keys are ignored)."""
        mode = train.get("x0_mode", "anchor_first")
        if mode not in ("anchor_first", "noise"):
            raise ValueError(f"released x0_mode must be 'anchor_first' or 'noise', got {mode!r}")
        return cls(
            use_visibility_weights=bool(train.get("fm_use_vis_mask", True)),
            invisible_weight=float(train.get("fm_invis_weight", 0.01)),
            sigma=float(train.get("fm_sigma", 0.05)),
            t_small_prob=float(train.get("t_small_prob", 0.2)),
            t_small_max=float(train.get("t_small_max", 0.1)),
            anchor=mode == "anchor_first",
            anchor_std=float(train.get("x0_noise_std", 0.1)),
        )


def sample_flow_time(
    batch: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    t_small_prob: float = 0.2,
    t_small_max: float = 0.1,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    t_eps: float = 1e-5,
) -> torch.Tensor:
    """Flow times ``"b"`` from the app. A.2 mixture (see the module docstring).

    Draw order (for reproducibility): the mixture choice, the uniform draw, the normal draw,
    each ``"b"``.
    """
    pick_small = torch.rand(batch, generator=generator, device=device) < t_small_prob
    small = torch.rand(batch, generator=generator, device=device) * t_small_max
    normal = torch.randn(batch, generator=generator, device=device)
    logit_normal = torch.sigmoid(logit_mean + logit_std * normal)
    return torch.where(pick_small, small, logit_normal).clamp(t_eps, 1.0 - t_eps)


def token_weights(token_vis: torch.Tensor, invisible_weight: float = 0.01) -> torch.Tensor:
    """Per-token weights ``w = v + ρ (1 - v)`` from latent visibility ``"b t n"`` in [0, 1]."""
    v = token_vis.float()
    return v + invisible_weight * (1.0 - v)


def token_squared_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean_c (pred - target)²`` per token, in float32: ``"b t n c"`` -> ``"b t n"``.

    The numerator of :func:`weighted_token_mse` before weighting; a data-parallel trainer
    sums ``w * token_squared_error`` per process and divides by the global weight sum.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must match")
    return (pred.float() - target.float()).pow(2).mean(dim=-1)


def weighted_token_mse(
    pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """``Σ_k w_k mean_c (pred - target)² / Σ_k w_k`` over all tokens of the batch (eq. 9).

    ``pred, target: "b t n c"``; ``weights: "b t n"`` or None (plain mean).
    """
    per_token = token_squared_error(pred, target)
    if weights is None:
        return per_token.mean()
    if weights.shape != per_token.shape:
        raise ValueError(
            f"weights must be 'b t n' = {tuple(per_token.shape)}, got {tuple(weights.shape)}"
        )
    w = weights.to(per_token.dtype)
    return (w * per_token).sum() / w.sum().clamp_min(torch.finfo(per_token.dtype).tiny)


@dataclass(frozen=True)
class FlowLossOutput:
    """The flow-matching loss and the tensors it was computed from (for logging/tests)."""

    loss: torch.Tensor  # scalar
    t: torch.Tensor  # "b" flow times
    x0: torch.Tensor  # "b tf n c" source state
    xt: torch.Tensor  # "b tf n c" model input
    target: torch.Tensor  # "b tf n c" velocity target x1 - x0
    pred: torch.Tensor  # "b tf n c" predicted velocity


def flow_matching_loss(
    velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x1: torch.Tensor,
    z_hist: torch.Tensor,
    *,
    token_vis: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    config: FlowLossConfig = FlowLossConfig(),
) -> FlowLossOutput:
    """One rectified-flow training loss (eqs. 7–9) for a batch.

    ``velocity_fn(x "b tf n c", t "b") -> v`` is the generator with its condition bound;
    ``x1: "b tf n c"`` normalized future latents (the data), ``z_hist: "b th n c"``
    normalized history latents (the anchor), ``token_vis: "b tf n"`` latent-level future
    visibility (``trajloom.flow.model.latent_visibility``) or None. Draw order: source
    state (:func:`~trajloom.flow.path.draw_source`), flow time, tube noise.
    """
    x0 = draw_source(
        z_hist,
        x1.shape[1],
        generator=generator,
        anchor=config.anchor,
        anchor_std=config.anchor_std,
        anchor_slices=config.anchor_slices,
        dtype=x1.dtype,
    )
    t = sample_flow_time(
        x1.shape[0],
        generator=generator,
        device=x1.device,
        t_small_prob=config.t_small_prob,
        t_small_max=config.t_small_max,
        logit_mean=config.logit_mean,
        logit_std=config.logit_std,
        t_eps=config.t_eps,
    )
    tube = (
        torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        if config.sigma
        else None
    )
    xt = interpolate(x0, x1, t, sigma=config.sigma, noise=tube)
    target = velocity_target(x0, x1)
    pred = velocity_fn(xt, t)
    weights = None
    if config.use_visibility_weights and token_vis is not None:
        weights = token_weights(token_vis, config.invisible_weight)
    loss = weighted_token_mse(pred, target, weights)
    return FlowLossOutput(loss=loss, t=t, x0=x0, xt=xt, target=target, pred=pred)
