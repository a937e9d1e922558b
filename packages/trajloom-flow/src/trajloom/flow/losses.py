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

The loss comes in two steps so that a trainer can use exactly what is tested here:
:func:`draw_flow_inputs` draws the random inputs (one generator for the batch, or one per
sample for resumable, data-parallel training), and :func:`flow_matching_terms` returns the
weighted sum and the weight sum separately, so that the sums of all micro-batches of all
processes divided by the global weight sum give the global-batch loss.
:func:`flow_matching_loss` is both steps with one generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from trajloom.flow.path import draw_source, interpolate, velocity_target

__all__ = [
    "FlowDraws",
    "FlowLossConfig",
    "FlowLossOutput",
    "draw_flow_inputs",
    "flow_matching_loss",
    "flow_matching_terms",
    "flow_token_weights",
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


def flow_token_weights(
    token_vis: torch.Tensor | None, config: FlowLossConfig
) -> torch.Tensor | None:
    """Eq. 9 weights ``"b tf n"`` of ``config`` for latent visibility ``token_vis``.

    None (a plain mean over tokens) when visibility weighting is off or no visibility is
    given.
    """
    if token_vis is None or not config.use_visibility_weights:
        return None
    return token_weights(token_vis, config.invisible_weight)


@dataclass(frozen=True)
class FlowDraws:
    """The random inputs of one flow-matching loss."""

    x0: torch.Tensor  # "b tf n c" source state (boundary-anchored unless the ablation)
    t: torch.Tensor  # "b" flow times
    tube: torch.Tensor | None  # "b tf n c" tube noise, None when config.sigma == 0


def draw_flow_inputs(
    z_hist: torch.Tensor,
    num_future: int,
    *,
    config: FlowLossConfig = FlowLossConfig(),
    generator: torch.Generator | None = None,
    generators: Sequence[torch.Generator] | None = None,
    dtype: torch.dtype = torch.float32,
) -> FlowDraws:
    """Source state, flow time and tube noise for history latents ``z_hist: "b th n c"``.

    Draw order per generator: source state (:func:`~trajloom.flow.path.draw_source`), flow
    time, tube noise. With ``generator`` the batch is drawn at once; with ``generators``
    (one per sample) sample ``i`` is drawn from ``generators[i]`` alone, so its draws do not
    depend on which other samples share its batch, process or micro-batch.
    """
    if generators is not None:
        if generator is not None:
            raise ValueError("give generator or generators, not both")
        if len(generators) != z_hist.shape[0]:
            raise ValueError(
                f"generators: one per sample, got {len(generators)} for a batch of "
                f"{z_hist.shape[0]}"
            )
        parts = [
            draw_flow_inputs(z_hist[i : i + 1], num_future, config=config, generator=g, dtype=dtype)
            for i, g in enumerate(generators)
        ]
        tubes = [p.tube for p in parts if p.tube is not None]
        return FlowDraws(
            x0=torch.cat([p.x0 for p in parts]),
            t=torch.cat([p.t for p in parts]),
            tube=torch.cat(tubes) if tubes else None,
        )
    b, _, n, c = z_hist.shape
    x0 = draw_source(
        z_hist,
        num_future,
        generator=generator,
        anchor=config.anchor,
        anchor_std=config.anchor_std,
        anchor_slices=config.anchor_slices,
        dtype=dtype,
    )
    t = sample_flow_time(
        b,
        generator=generator,
        device=z_hist.device,
        t_small_prob=config.t_small_prob,
        t_small_max=config.t_small_max,
        logit_mean=config.logit_mean,
        logit_std=config.logit_std,
        t_eps=config.t_eps,
    )
    tube = None
    if config.sigma:
        shape = (b, num_future, n, c)
        tube = torch.randn(shape, generator=generator, device=z_hist.device, dtype=dtype)
    return FlowDraws(x0=x0, t=t, tube=tube)


@dataclass(frozen=True)
class FlowLossOutput:
    """The flow-matching loss and the tensors it was computed from.

    ``loss = numerator / weight_sum``; a data-parallel trainer sums ``numerator`` over
    micro-batches and processes and divides by the summed ``weight_sum`` instead.
    """

    loss: torch.Tensor  # scalar
    numerator: torch.Tensor  # scalar Σ_k w_k mean_c (pred - target)², float32
    weight_sum: torch.Tensor  # scalar Σ_k w_k (the token count without weights)
    t: torch.Tensor  # "b" flow times
    x0: torch.Tensor  # "b tf n c" source state
    xt: torch.Tensor  # "b tf n c" model input
    target: torch.Tensor  # "b tf n c" velocity target x1 - x0
    pred: torch.Tensor  # "b tf n c" predicted velocity


def flow_matching_terms(
    velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x1: torch.Tensor,
    draws: FlowDraws,
    *,
    token_vis: torch.Tensor | None = None,
    config: FlowLossConfig = FlowLossConfig(),
) -> FlowLossOutput:
    """The rectified-flow loss (eqs. 7–9) of ``x1: "b tf n c"`` for given random ``draws``.

    ``velocity_fn(x "b tf n c", t "b") -> v`` is the generator with its condition bound;
    ``token_vis: "b tf n"`` latent-level future visibility
    (``trajloom.flow.model.latent_visibility``) or None.
    """
    xt = interpolate(draws.x0.to(x1.dtype), x1, draws.t, sigma=config.sigma, noise=draws.tube)
    target = velocity_target(draws.x0.to(x1.dtype), x1)
    pred = velocity_fn(xt, draws.t)
    per_token = token_squared_error(pred, target)
    weights = flow_token_weights(token_vis, config)
    if weights is None:
        numerator, weight_sum = per_token.sum(), torch.tensor(float(per_token.numel()))
    else:
        if weights.shape != per_token.shape:
            raise ValueError(
                f"token_vis must be 'b tf n' = {tuple(per_token.shape)}, got {tuple(weights.shape)}"
            )
        w = weights.to(per_token)
        numerator, weight_sum = (w * per_token).sum(), w.sum()
    weight_sum = weight_sum.to(per_token)
    loss = numerator / weight_sum.clamp_min(torch.finfo(per_token.dtype).tiny)
    return FlowLossOutput(
        loss=loss,
        numerator=numerator,
        weight_sum=weight_sum,
        t=draws.t,
        x0=draws.x0,
        xt=xt,
        target=target,
        pred=pred,
    )


def flow_matching_loss(
    velocity_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x1: torch.Tensor,
    z_hist: torch.Tensor,
    *,
    token_vis: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    config: FlowLossConfig = FlowLossConfig(),
) -> FlowLossOutput:
    """One rectified-flow training loss (eqs. 7–9) for a batch, drawn from one generator.

    ``x1: "b tf n c"`` normalized future latents (the data), ``z_hist: "b th n c"``
    normalized history latents (the anchor); see :func:`draw_flow_inputs` and
    :func:`flow_matching_terms`.
    """
    draws = draw_flow_inputs(
        z_hist, x1.shape[1], config=config, generator=generator, dtype=x1.dtype
    )
    return flow_matching_terms(velocity_fn, x1, draws, token_vis=token_vis, config=config)
