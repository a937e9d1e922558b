"""Guided sampling: steer a flow's samples so that their decoded futures meet the pins.

Endpoint guidance, one wrapper around any velocity function, so it works with every
sampler of :mod:`trajloom.flow.samplers` (Euler, DOPRI5). At a state ``x`` at flow time
``t`` with velocity ``v``, the rectified flow's endpoint estimate is
``x̂1 = x + (1 - t) v``. A few inner steps move ``x̂1`` down the gradient of the pin loss
(decoded through the VAE at the pinned points only), and the returned velocity points at
the corrected endpoint, ``v' = (x̂1' - x) / (1 - t)``: an Euler step then moves toward a
future that meets the pins, and the generator, seeing that state at the next step,
fills in the rest of the field around it.

Step length: the loss is a weighted sum of squares ``L = ½ Σ w r²`` (pixels), so each
inner step is ``x̂1 -= s(t) · (2 L / |∇L|²) · ∇L`` — the Gauss–Newton step along the
gradient when the decoder is locally isotropic (it removes the whole linearized error
at ``s = 1``), which needs no learning rate tuned to the decoder's scale. ``s(t)`` is
``strength`` times the schedule. No pins: the velocity function itself is returned, so
sampling is bit-identical to unguided sampling.

"hidden" pins (:func:`hidden_loss`, :func:`anchored_velocity`) use the same step on
other residuals: the visibility head's logit of the pinned point at the pinned frame,
read from the endpoint estimate, above ``logit(threshold) - margin`` (a hinge toward "not
visible"); the pixels the decoded point lies inside a ``margin``-px border of the image
(occluded, not gone); and the decoded field's move from where that call's uncorrected
estimate put it (only the visibility should change: this halves the pinned point's own
move on the tiny test model). The head is per token, so the logit's gradient touches only
the pinned point's latents.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from trajloom.encoding import GridSpec
from trajloom.flow.pins import PinTargets
from trajloom.flow.samplers import VelocityFn

__all__ = [
    "SCHEDULES",
    "AnchoredLoss",
    "EndpointLoss",
    "GuidanceConfig",
    "anchored_velocity",
    "grid_smoother",
    "guided_velocity",
    "hidden_loss",
    "pin_loss",
]

#: Strength over flow time: "constant" s, "ramp" s·t (trust the endpoint estimate more as
#: it sharpens), "late" s for t >= 0.5 else 0.
SCHEDULES = ("constant", "ramp", "late")

#: ``loss(x̂1 "b ...") -> "b"``: per-sample weighted half sum of squared residuals.
EndpointLoss = Callable[[torch.Tensor], torch.Tensor]
#: ``loss_from(x̂1 "b ...") -> EndpointLoss``: a loss stated relative to an endpoint estimate.
AnchoredLoss = Callable[[torch.Tensor], EndpointLoss]
#: ``precondition(g "b ...") -> "b ..."``: a symmetric positive semi-definite linear map.
Preconditioner = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class GuidanceConfig:
    """How hard and how often to steer toward the pins."""

    strength: float = 1.0  # fraction of the linearized pin error removed per inner step
    inner_steps: int = 2  # gradient steps on the endpoint per velocity call (decoder fwd+bwd each)
    schedule: str = "constant"  # one of SCHEDULES
    t_end: float = 0.999  # no guidance from here on: v' divides by 1 - t
    max_step: float = 3.0  # cap on one inner step's RMS (normalized latent units)
    spread: float = 1.5  # Gaussian sigma (grid cells) sharing each step with neighbours; 0: off
    keep: float = 1.0  # hidden pins: weight of keeping the field in place (0: visibility only)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.strength) and 0 < self.strength <= 2):
            raise ValueError(f"GuidanceConfig.strength must be in (0, 2], got {self.strength}")
        if not isinstance(self.inner_steps, int) or isinstance(self.inner_steps, bool):
            raise ValueError(f"GuidanceConfig.inner_steps must be an int, got {self.inner_steps!r}")
        if self.inner_steps < 1:
            raise ValueError(f"GuidanceConfig.inner_steps must be >= 1, got {self.inner_steps}")
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"GuidanceConfig.schedule must be one of {SCHEDULES}, got {self.schedule!r}"
            )
        if not 0 < self.t_end <= 1:
            raise ValueError(f"GuidanceConfig.t_end must be in (0, 1], got {self.t_end}")
        if not self.max_step > 0:
            raise ValueError(f"GuidanceConfig.max_step must be > 0, got {self.max_step}")
        if not (math.isfinite(self.spread) and self.spread >= 0):
            raise ValueError(f"GuidanceConfig.spread must be >= 0, got {self.spread}")
        if not (math.isfinite(self.keep) and self.keep >= 0):
            raise ValueError(f"GuidanceConfig.keep must be >= 0, got {self.keep}")

    def strength_at(self, t: float) -> float:
        """``s(t)``: the step fraction at flow time ``t`` (0 from ``t_end`` on)."""
        if t >= self.t_end:
            return 0.0
        if self.schedule == "ramp":
            return self.strength * t
        if self.schedule == "late":
            return self.strength if t >= 0.5 else 0.0
        return self.strength

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _correction(
    loss_fn: EndpointLoss, x1: torch.Tensor, max_step: float, precondition: Preconditioner | None
) -> torch.Tensor:
    """One step ``(2 L / <g, P g>) P g`` per sample (Gauss–Newton along ``P g`` for a locally
    isotropic decoder), capped to an RMS of ``max_step``."""
    with torch.enable_grad():
        z = x1.detach().requires_grad_(True)
        loss = loss_fn(z)
        (grad,) = torch.autograd.grad(loss.sum(), z)
    direction = grad if precondition is None else precondition(grad)
    view = (-1,) + (1,) * (x1.dim() - 1)
    sq = (grad * direction).flatten(1).sum(1)
    alpha = torch.where(sq > 0, 2 * loss.detach() / sq.clamp_min(1e-30), torch.zeros_like(sq))
    step = alpha.view(view) * direction
    rms = step.flatten(1).pow(2).mean(1).sqrt()
    scale = torch.clamp(max_step / rms.clamp_min(1e-30), max=1.0)
    return step * scale.view(view)


def guided_velocity(
    velocity_fn: VelocityFn,
    loss_fn: EndpointLoss | None,
    config: GuidanceConfig,
    *,
    precondition: Preconditioner | None = None,
) -> VelocityFn:
    """``velocity_fn`` steered so that the endpoint estimate lowers ``loss_fn`` (module doc).

    ``loss_fn(x̂1 "b ...") -> "b"``; None returns ``velocity_fn`` itself (unguided, bit for
    bit). ``precondition`` maps the loss gradient to the step direction (e.g.
    :func:`grid_smoother`, so that the grid neighbours of a pinned point move with it).
    Pure: no state between calls; usable with ``sample_euler`` and ``sample_dopri5``.
    """
    if loss_fn is None:
        return velocity_fn
    return _steer(velocity_fn, lambda _x1: loss_fn, config, precondition)


def anchored_velocity(
    velocity_fn: VelocityFn,
    loss_from: AnchoredLoss | None,
    config: GuidanceConfig,
    *,
    precondition: Preconditioner | None = None,
) -> VelocityFn:
    """:func:`guided_velocity` with a loss built at each call from that call's endpoint
    estimate before any correction: ``loss_from(x̂1) -> EndpointLoss``, e.g. one that keeps
    the decoded field where the model puts it while it changes something else
    (:func:`hidden_loss`). Still pure: nothing is kept between calls. None: ``velocity_fn``."""
    if loss_from is None:
        return velocity_fn
    return _steer(velocity_fn, loss_from, config, precondition)


def _steer(
    velocity_fn: VelocityFn,
    loss_from: AnchoredLoss,
    config: GuidanceConfig,
    precondition: Preconditioner | None,
) -> VelocityFn:
    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v = velocity_fn(x, t)
        s = config.strength_at(float(t.reshape(-1)[0]))
        if s == 0.0:
            return v
        remaining = (1.0 - t.to(x.dtype)).view((-1,) + (1,) * (x.dim() - 1))
        x1 = x + remaining * v.to(x.dtype)
        loss_fn = loss_from(x1.detach())
        for _ in range(config.inner_steps):
            x1 = x1 - s * _correction(loss_fn, x1, config.max_step, precondition)
        return ((x1 - x) / remaining).to(v.dtype)

    return velocity


def grid_smoother(grid: GridSpec, sigma: float) -> Preconditioner | None:
    """Spread ``"b t n c"`` tensors over the grid: ``g'[n] = Σ_m exp(-|n - m|² / 2σ²) g[m]``.

    Distances in grid cells between the row-major points. A Gaussian kernel matrix is
    positive semi-definite, so the guidance step stays a descent direction; the pinned
    point's latent change is shared by its neighbours, which then move with it instead of
    tearing away. ``sigma = 0``: None (no spreading).
    """
    if sigma == 0:
        return None
    rows = torch.arange(grid.num_points) // grid.grid_w
    cols = torch.arange(grid.num_points) % grid.grid_w
    cells = torch.stack([rows, cols], dim=-1).float()
    kernel = torch.exp(-torch.cdist(cells, cells).pow(2) / (2 * sigma**2))

    def smooth(g: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nm,btmc->btnc", kernel.to(g.device, g.dtype), g)

    return smooth


def pin_loss(
    decode_points: Callable[[torch.Tensor], torch.Tensor],
    pins: PinTargets,
    grid: GridSpec,
    *,
    margin: float = 2.0,
) -> EndpointLoss | None:
    """The pins' loss on an endpoint: ``x̂1 "b ..." -> "b"`` (None when there are no pins).

    ``decode_points(x̂1)`` gives unclamped pixel tracks ``"b tf n 2"`` (the VAE's query
    rows). An "at" pin adds ``½ w |p - target|²``; an "outside" pin ``½ w d²`` with ``d``
    the distance the point still has to travel to be ``margin`` px outside the image.
    "hidden" pins are :func:`hidden_loss`'s (None when they are the only ones).
    """
    if not bool((~pins.hidden).any()):
        return None

    def loss(x1: torch.Tensor) -> torch.Tensor:
        tracks = decode_points(x1)
        p = tracks[pins.row, pins.frame, pins.point].float()  # "k 2"
        at = (p - pins.target).pow(2).sum(-1)
        out = torch.relu(_to_edge(p, grid) + margin).pow(2)
        per_pin = 0.5 * pins.weight * torch.where(pins.outside, out, at)
        per_pin = torch.where(pins.hidden, torch.zeros_like(per_pin), per_pin)
        return torch.zeros(x1.shape[0], device=x1.device).index_add(0, pins.row, per_pin)

    return loss


def _to_edge(p: torch.Tensor, grid: GridSpec) -> torch.Tensor:
    """``p: "k 2"`` px -> ``"k"``: distance to the nearest image edge (negative outside)."""
    hi = torch.tensor([grid.width - 1, grid.height - 1], dtype=p.dtype, device=p.device)
    return torch.cat([p, hi - p], dim=-1).min(dim=-1).values


def _inside_gap(p: torch.Tensor, grid: GridSpec, margin: float) -> torch.Tensor:
    """``p: "k 2"`` px -> ``"k"``: how far each point is from being ``margin`` px inside."""
    return torch.relu(margin - _to_edge(p, grid))


def hidden_loss(
    visibility_logits: Callable[[torch.Tensor], torch.Tensor],
    decode_points: Callable[[torch.Tensor], torch.Tensor],
    pins: PinTargets,
    grid: GridSpec,
    *,
    threshold: float = 0.5,
    margin_logit: float = 2.0,
    margin: float = 2.0,
    keep: float = 1.0,
) -> AnchoredLoss | None:
    """The "hidden" pins' loss, anchored (:func:`anchored_velocity`); None without any.

    ``visibility_logits(x̂1)`` gives the visibility head's frame logits ``"b tf n"``,
    ``decode_points(x̂1)`` unclamped pixel tracks ``"b tf n 2"``. Built at an endpoint
    ``x̂1_ref``, the loss of ``x̂1`` adds per hidden pin ``½ w (r² + d²)``: ``r`` how far
    its logit is above ``logit(threshold) - margin_logit`` (predicted invisible, with room),
    ``d`` how far the decoded point is from being ``margin`` px inside the image (occluded,
    not gone); and per sample with hidden pins ``½ keep Σ |p - p_ref|²`` over every point
    and frame (px): the field stays where the model put it, only the visibility changes.
    """
    if not bool(pins.hidden.any()):
        return None
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"hidden_loss: threshold must be in (0, 1), got {threshold}")
    sel = pins.hidden
    row, frame, point, weight = pins.row[sel], pins.frame[sel], pins.point[sel], pins.weight[sel]
    rows = torch.unique(row)
    ceiling = math.log(threshold / (1.0 - threshold)) - margin_logit

    def loss_from(x1_ref: torch.Tensor) -> EndpointLoss:
        with torch.no_grad():
            ref = decode_points(x1_ref)[rows].float() if keep > 0 else None

        def loss(x1: torch.Tensor) -> torch.Tensor:
            logit = visibility_logits(x1)[row, frame, point].float()  # "k"
            r = torch.relu(logit - ceiling)
            tracks = decode_points(x1).float()
            d = _inside_gap(tracks[row, frame, point], grid, margin)
            per_pin = 0.5 * weight * (r.pow(2) + d.pow(2))
            out = torch.zeros(x1.shape[0], device=x1.device).index_add(0, row, per_pin)
            if ref is not None:
                kept = 0.5 * keep * (tracks[rows] - ref).pow(2).flatten(1).sum(1)
                out = out.index_add(0, rows, kept)
            return out

        return loss

    return loss_from
