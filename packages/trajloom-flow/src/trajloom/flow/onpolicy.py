"""On-policy K-step fine-tuning of TrajLoom-Flow (paper §3.3.3, eqs. 10–14, app. A.3).

Flow matching trains on interpolated states ``x_t``; sampling queries the model on the
states its own ODE visits. The on-policy objective rolls the model out and supervises it
on those visited states. With a grid ``0 = τ_0 < τ_1 < ... < τ_K = 1`` (logit-spaced):

* detached Euler rollout (eq. 10): ``x̂_0 = x_0``, ``x̂_{k+1} = x̂_k + (τ_{k+1} - τ_k) sg[v_k]``
  with ``v_k = v_θ(x̂_k, τ_k)``;
* endpoint-consistent targets (eq. 11), denominators clamped at ``δ``:
  toward the data ``u¹_k = (x_1 - x̂_k) / max(1 - τ_k, δ)`` — the straight line from the
  visited state to the data endpoint — and toward the source
  ``u⁰_k = (x̂_k - x_0) / max(τ_k, δ)`` — the straight line from the source through it;
* rollout loss (eq. 12): ``L_roll = mean_k λ₁ ||v_k - u¹_k||²_w + mean_{k≥1} λ₀ ||v_k - u⁰_k||²_w``,
  visibility-weighted like eq. 9 (``u⁰_0`` is ``0 / δ`` — no information — so the source
  term starts at ``k = 1``);
* endpoint consistency (eq. 13): the implied endpoint ``x̃_k = x̂_k + (1 - τ_k) v_k`` should be
  the data, ``L_ec = mean_k ||x̃_k - x_1||²`` over all tokens (no visibility mask, app. A.3);
* total (eq. 14): ``L = L_FM + λ_op (L_roll + λ_ec L_ec)``, on a sub-batch (8 in the paper).

Limits (tested): on the exact straight field ``v = x_1 - x_0`` the visited states are the
interpolation states, ``u¹ = u⁰ = v`` and ``x̃ = x_1``, so every term is 0; with ``K = 1``
and ``λ₀ = λ_ec = 0`` the loss is ``λ_op`` times the flow-matching loss at ``t = 0``.

The paper's numeric values of K, the grid parameter, δ and the weights were lost in the text
extraction and the training code is unreleased; the defaults below are ours and are
marked as such.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from trajloom.flow.losses import token_weights, weighted_token_mse
from trajloom.flow.path import draw_source
from trajloom.flow.samplers import logit_time_grid

__all__ = [
    "OnPolicyConfig",
    "OnPolicyOutput",
    "endpoint_targets",
    "onpolicy_loss",
    "select_samples",
    "sub_batch_indices",
]


@dataclass(frozen=True)
class OnPolicyConfig:
    """Settings of the on-policy K-step stage (app. A.3). Numeric defaults are ours."""

    enabled: bool = True  # False: the "w/o on-policy" ablation (flow matching only)
    steps: int = 4  # K Euler rollout steps (ours; few steps keep the K backward graphs small)
    grid_scale: float = 2.0  # logit half-width of the rollout grid (ours)
    denom_min: float = 0.05  # δ clamping 1 - τ and τ in the targets (ours)
    weight_to_data: float = 1.0  # λ₁, rollout term toward x_1 (ours)
    weight_to_source: float = 0.25  # λ₀, rollout term toward x_0 (ours, small)
    weight_endpoint: float = 0.1  # λ_ec (ours, small)
    weight: float = 0.1  # λ_op, overall weight added to the flow-matching loss (ours)
    sub_batch: int = 8  # samples per iteration that get the rollout (paper: 8)
    use_visibility_weights: bool = True  # rollout terms weighted like eq. 9
    invisible_weight: float = 0.01

    def __post_init__(self) -> None:
        for name in ("steps", "sub_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"OnPolicyConfig.{name} must be a positive int, got {value!r}")
        if not self.grid_scale > 0:
            raise ValueError(f"OnPolicyConfig.grid_scale must be > 0, got {self.grid_scale}")
        if not 0 < self.denom_min <= 1:
            raise ValueError(f"OnPolicyConfig.denom_min must be in (0, 1], got {self.denom_min}")
        for name in ("weight_to_data", "weight_to_source", "weight_endpoint", "weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"OnPolicyConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.invisible_weight <= 1.0:
            raise ValueError(
                f"OnPolicyConfig.invisible_weight must be in [0, 1], got {self.invisible_weight}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OnPolicyConfig:
        return cls(**d)


@dataclass(frozen=True)
class OnPolicyOutput:
    """The weighted on-policy loss and its parts."""

    loss: torch.Tensor  # λ_op (L_roll + λ_ec L_ec): add it to the flow-matching loss
    rollout: torch.Tensor  # L_roll (already λ₁/λ₀ weighted)
    endpoint: torch.Tensor  # L_ec (unweighted)
    times: torch.Tensor  # "k" the rollout times τ_0..τ_{K-1}
    states: torch.Tensor  # "k b ..." visited states x̂_k (detached)


def endpoint_targets(
    state: torch.Tensor,
    x0: torch.Tensor,
    x1: torch.Tensor,
    tau: float,
    denom_min: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 11: ``(u¹, u⁰) = ((x_1 - x̂) / max(1 - τ, δ), (x̂ - x_0) / max(τ, δ))``."""
    to_data = (x1 - state) / max(1.0 - tau, denom_min)
    to_source = (state - x0) / max(tau, denom_min)
    return to_data, to_source


def sub_batch_indices(
    batch: int, size: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``min(size, batch)`` distinct sample indices, drawn without replacement."""
    return torch.randperm(batch, generator=generator)[: min(size, batch)]


def select_samples(cond: Any, index: torch.Tensor) -> Any:
    """The samples ``index`` of a condition dataclass (e.g. ``FlowCondition``) or a tensor.

    Every tensor field is indexed along its batch axis; None fields stay None. Use it to
    bind the on-policy sub-batch: ``lambda x, t: model(x, t, select_samples(cond, idx))``.
    """
    if isinstance(cond, torch.Tensor):
        return cond[index.to(cond.device)]
    if not dataclasses.is_dataclass(cond) or isinstance(cond, type):
        raise TypeError(f"select_samples takes a tensor or a dataclass, got {type(cond).__name__}")
    changes = {
        f.name: select_samples(getattr(cond, f.name), index)
        for f in dataclasses.fields(cond)
        if isinstance(getattr(cond, f.name), torch.Tensor)
    }
    return dataclasses.replace(cond, **changes)


def _zero(like: torch.Tensor) -> torch.Tensor:
    return torch.zeros((), device=like.device, dtype=torch.float32)


def _visited_states_and_velocities(
    velocity_fn: Callable[..., torch.Tensor],
    cond: Any,
    x0: torch.Tensor,
    taus: list[float],
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The detached Euler rollout ``x̂_0..x̂_{K-1}`` and the velocities ``v_k`` (with gradient).

    Without ``cond`` the condition is bound inside ``velocity_fn(x, t)``, so each visited
    state is evaluated in its own call and the rollout steps on that call's detached output.
    With ``cond`` the rollout runs without gradient (each state needs the previous velocity,
    so it stays sequential: K - 1 forward passes that store no activations) and the K states
    are then evaluated together in one call of batch ``K * b`` with the condition repeated K
    times: one large forward and backward instead of K small ones (the on-policy sub-batch
    is a few samples per micro-batch, too few to fill an accelerator), and one model call
    with gradient per loss, which keeps the autograd graph that data parallelism sees simple.
    """
    steps, b = len(taus) - 1, x0.shape[0]

    def times(tau: float) -> torch.Tensor:
        return torch.full((b,), tau, device=x0.device, dtype=torch.float32)

    states, velocities = [x0], []
    if cond is None:
        for k in range(steps):
            velocities.append(velocity_fn(states[k], times(taus[k])))
            if k + 1 < steps:
                # the rollout is detached: gradients flow only through v at the visited states
                step = (taus[k + 1] - taus[k]) * velocities[k].detach().to(x0.dtype)
                states.append(states[k] + step)
        return states, velocities
    with torch.no_grad():
        for k in range(steps - 1):
            v = velocity_fn(states[k], times(taus[k]), cond)
            states.append(states[k] + (taus[k + 1] - taus[k]) * v.to(x0.dtype))
    # k-major stacking: rows k * b ... (k + 1) * b - 1 hold state k of samples 0 ... b - 1
    repeated = select_samples(cond, torch.arange(b).repeat(steps))
    v_all = velocity_fn(torch.cat(states), torch.cat([times(tau) for tau in taus[:-1]]), repeated)
    return states, list(v_all.split(b))


def onpolicy_loss(
    velocity_fn: Callable[..., torch.Tensor],
    x1: torch.Tensor,
    z_hist: torch.Tensor,
    *,
    cond: Any = None,
    token_vis: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    x0: torch.Tensor | None = None,
    config: OnPolicyConfig = OnPolicyConfig(),
    anchor: bool = True,
    anchor_std: float = 0.1,
) -> OnPolicyOutput:
    """On-policy K-step loss (eqs. 10–14) for the batch given (select the sub-batch first).

    ``velocity_fn(x "b tf n c", t "b", cond) -> v`` with ``cond`` the batch's condition
    (e.g. the generator itself and a ``FlowCondition``): the K visited states are then
    evaluated in one batched call (the condition repeated K times with
    :func:`select_samples`) after a no-grad rollout. Without ``cond``,
    ``velocity_fn(x, t) -> v`` has the condition bound and is called once per visited
    state (K calls with gradient); both give the same loss to float rounding.
    ``x1: "b tf n c"`` normalized future latents; ``z_hist: "b th n c"`` for the anchored
    source (drawn with ``generator`` like the flow-matching source unless ``x0`` is given);
    ``token_vis: "b tf n"`` latent visibility or None. ``config.enabled = False`` returns
    zeros without evaluating the model.
    """
    times = logit_time_grid(config.steps, scale=config.grid_scale, dtype=torch.float64)
    taus = times.tolist()
    if not config.enabled:
        zero = _zero(x1)
        return OnPolicyOutput(zero, zero, zero, times[:-1], x1.new_zeros((0, *x1.shape)))
    if x0 is None:
        x0 = draw_source(
            z_hist, x1.shape[1], generator=generator, anchor=anchor, anchor_std=anchor_std
        )
    if x0.shape != x1.shape:
        raise ValueError(f"x0 {tuple(x0.shape)} and x1 {tuple(x1.shape)} must match")
    weights = None
    if config.use_visibility_weights and token_vis is not None:
        weights = token_weights(token_vis, config.invisible_weight)
    x0, x1 = x0.detach(), x1.detach()

    states, velocities = _visited_states_and_velocities(velocity_fn, cond, x0, taus)
    to_data_terms, to_source_terms, endpoint_terms = [], [], []
    for k, (state, v) in enumerate(zip(states, velocities, strict=True)):
        tau = taus[k]
        u_data, u_source = endpoint_targets(state, x0, x1, tau, config.denom_min)
        to_data_terms.append(weighted_token_mse(v, u_data, weights))
        if k >= 1:
            to_source_terms.append(weighted_token_mse(v, u_source, weights))
        implied_endpoint = state + (1.0 - tau) * v
        endpoint_terms.append(weighted_token_mse(implied_endpoint, x1))

    rollout = config.weight_to_data * torch.stack(to_data_terms).mean()
    if to_source_terms:
        rollout = rollout + config.weight_to_source * torch.stack(to_source_terms).mean()
    endpoint = torch.stack(endpoint_terms).mean()
    loss = config.weight * (rollout + config.weight_endpoint * endpoint)
    return OnPolicyOutput(
        loss=loss,
        rollout=rollout,
        endpoint=endpoint,
        times=times[:-1].to(torch.float32),
        states=torch.stack(states),
    )
