"""Stateless ODE samplers for the rectified-flow generator (paper §3.3.4).

Time runs from ``t = 0`` (source state) to ``t = 1`` (data). A velocity function has the
signature ``velocity_fn(x "b ...", t "b") -> v "b ..."``; the samplers never clamp or
rescale ``t`` themselves (the pipeline's model wrapper clamps it to ``[1e-5, 1 - 1e-5]``
as the released sampler does). Schedules are tensors built by separate pure functions,
progress goes through a callback, and adaptive solvers report their function evaluations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch

__all__ = [
    "SolverProgress",
    "SolverStats",
    "VelocityFn",
    "logit_time_grid",
    "sample_dopri5",
    "sample_euler",
    "uniform_time_grid",
]

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SolverProgress:
    """What a sampler reports to its callback after each accepted step."""

    step: int  # accepted steps so far (1-based)
    t: float  # flow time reached
    nfe: int  # velocity evaluations so far
    x: torch.Tensor  # state at time t, "b ..."
    total_steps: int | None = None  # known for fixed grids, None for adaptive solvers


@dataclass(frozen=True)
class SolverStats:
    """Cost of one adaptive solve."""

    nfe: int  # velocity evaluations, including the initial-step probe
    accepted: int  # accepted steps
    rejected: int  # rejected steps


def uniform_time_grid(
    steps: int, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``steps + 1`` equally spaced times ``t_i = i / steps`` on ``[0, 1]`` (released Euler grid)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    return torch.linspace(0.0, 1.0, steps + 1, device=device, dtype=dtype)


def logit_time_grid(
    steps: int,
    *,
    scale: float = 2.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A logit-spaced grid on ``[0, 1]``: denser near both ends, ``t_0 = 0`` and ``t_K = 1``.

    ``t_k = (σ(a_k) - σ(-s)) / (σ(s) - σ(-s))`` with ``a_k`` equally spaced on ``[-s, s]``:
    the sigmoid of an equally spaced logit grid, rescaled affinely so that the ends are
    exactly 0 and 1 (the on-policy rollout of §3.3.3 starts at the source state and ends
    at the data time). ``scale`` is the logit half-width ``s``; as ``s -> 0`` the grid tends
    to the uniform one, larger ``s`` crowds steps toward the ends.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    a = torch.linspace(-scale, scale, steps + 1, dtype=torch.float64)
    lo, hi = 1.0 / (1.0 + math.exp(scale)), 1.0 / (1.0 + math.exp(-scale))
    grid = (torch.sigmoid(a) - lo) / (hi - lo)
    grid[0], grid[-1] = 0.0, 1.0
    return grid.to(device=device, dtype=dtype)


def _check_grid(time_grid: torch.Tensor) -> None:
    if time_grid.ndim != 1 or time_grid.numel() < 2:
        raise ValueError(
            f"time_grid must be 1-D with at least 2 times, got shape {tuple(time_grid.shape)}"
        )
    if not bool((time_grid[1:] > time_grid[:-1]).all()):
        raise ValueError(
            "time_grid must be strictly increasing (time runs from source t=0 to data t=1), "
            f"got {time_grid.tolist()}"
        )


def _batch_time(t: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # flow time at the state's precision when that is float64 (a float32 t would cap a
    # float64 solve at ~1e-8); float32 otherwise, as the released sampler feeds the model
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return torch.full((x.shape[0],), float(t), device=x.device, dtype=dtype)


@torch.no_grad()
def sample_euler(
    velocity_fn: VelocityFn,
    x0: torch.Tensor,
    time_grid: torch.Tensor,
    *,
    callback: Callable[[SolverProgress], None] | None = None,
) -> torch.Tensor:
    """Forward Euler over ``time_grid``: ``x_{i+1} = x_i + (t_{i+1} - t_i) v(x_i, t_i)``.

    ``x0: "b ..."`` is the source state at ``time_grid[0]``; returns the state at
    ``time_grid[-1]``. One velocity evaluation per step (``len(time_grid) - 1``). With
    :func:`uniform_time_grid` this is the released Euler-N sampler step for step.
    """
    _check_grid(time_grid)
    times = time_grid.detach().to("cpu", torch.float64).tolist()
    steps = len(times) - 1
    x = x0
    for i in range(steps):
        dt = times[i + 1] - times[i]
        v = velocity_fn(x, _batch_time(times[i], x))
        x = x + dt * v.to(x.dtype)
        if callback is not None:
            callback(SolverProgress(step=i + 1, t=times[i + 1], nfe=i + 1, x=x, total_steps=steps))
    return x


# Dormand–Prince 5(4) tableau (Dormand & Prince 1980): nodes c, stage weights a, the
# 5th-order solution b (FSAL: b equals the last row of a) and the embedded 4th-order b*.
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B_STAR = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_ORDER = 5
# Step-size controller constants (Hairer, Nørsett & Wanner, II.4; the defaults torchdiffeq uses).
_SAFETY, _MAX_GROWTH, _MIN_SHRINK = 0.9, 10.0, 0.2


def _rms(x: torch.Tensor) -> float:
    return float(x.float().pow(2).mean().sqrt())


def _error_ratio(
    err: torch.Tensor, y0: torch.Tensor, y1: torch.Tensor, atol: float, rtol: float
) -> float:
    tol = atol + rtol * torch.maximum(y0.abs(), y1.abs())
    return _rms(err / tol)


def _initial_step(
    velocity_fn: VelocityFn,
    t0: float,
    y0: torch.Tensor,
    f0: torch.Tensor,
    atol: float,
    rtol: float,
) -> float:
    """Hairer's starting step (II.4, "automatic step size control"); costs one evaluation."""
    scale = atol + y0.abs() * rtol
    d0, d1 = _rms(y0 / scale), _rms(f0 / scale)
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    f1 = velocity_fn(y0 + h0 * f0, _batch_time(t0 + h0, y0)).to(y0.dtype)
    d2 = _rms((f1 - f0) / scale) / h0
    if max(d1, d2) <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / _ORDER)
    return min(100.0 * h0, h1)


@torch.no_grad()
def sample_dopri5(
    velocity_fn: VelocityFn,
    x0: torch.Tensor,
    t0: float = 0.0,
    t1: float = 1.0,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    first_step: float | None = None,
    max_steps: int = 10_000,
    callback: Callable[[SolverProgress], None] | None = None,
) -> tuple[torch.Tensor, SolverStats]:
    """Adaptive Dormand–Prince 5(4) from ``t0`` to ``t1``; returns ``(x(t1), stats)``.

    Local extrapolation (the 5th-order solution is propagated), FSAL (6 new evaluations
    per step), error ``RMS(err / (atol + rtol * max(|x_n|, |x_{n+1}|)))`` over the whole
    batch (as released, so a batch shares step sizes), step factor
    ``clip(0.9 * ratio^(-1/5), 0.2, 10)`` (never shrinking after an accepted step). The last step
    is shortened to land on ``t1`` exactly. Defaults are the released ``atol = rtol = 1e-5``.
    """
    if not (t1 > t0):
        raise ValueError(f"need t1 > t0 (time runs from source to data), got t0={t0}, t1={t1}")
    if atol <= 0 or rtol < 0:
        raise ValueError(f"need atol > 0 and rtol >= 0, got atol={atol}, rtol={rtol}")
    y, t = x0, float(t0)
    f = velocity_fn(y, _batch_time(t, y)).to(y.dtype)
    nfe = 1
    if first_step is None:
        h = _initial_step(velocity_fn, t, y, f, atol, rtol)
        nfe += 1
    else:
        h = float(first_step)
    accepted = rejected = 0
    while t < t1:
        if accepted + rejected >= max_steps:
            raise RuntimeError(
                f"sample_dopri5 took {max_steps} steps and reached only t={t:.6g} of {t1}; "
                "the field may be stiff or non-finite — raise max_steps or loosen atol/rtol"
            )
        last = t + h >= t1 - 1e-12 * max(1.0, abs(t1))
        h_try = t1 - t if last else h
        k = [f]
        for i in range(1, 7):
            yi = y
            for a_ij, k_j in zip(_A[i], k, strict=True):
                if a_ij != 0.0:
                    yi = yi + (h_try * a_ij) * k_j
            if i == 6:
                y_new = yi  # FSAL: the 7th stage is evaluated at the 5th-order solution
            k.append(velocity_fn(yi, _batch_time(t + _C[i] * h_try, y)).to(y.dtype))
        nfe += 6
        # k holds 7 tensors, so the sum is a tensor (typeshed's sum also allows its start 0)
        err = cast(
            torch.Tensor,
            sum(((h_try * (b - bs)) * k_j for b, bs, k_j in zip(_B, _B_STAR, k, strict=True))),
        )
        ratio = _error_ratio(err, y, y_new, atol, rtol)
        if not math.isfinite(ratio):
            raise FloatingPointError(
                f"sample_dopri5: non-finite error estimate at t={t:.6g} (h={h_try:.3g}); "
                "the velocity field returned NaN/inf"
            )
        if ratio <= 1.0:
            t = t1 if last else t + h_try
            y, f = y_new, k[6]
            accepted += 1
            if callback is not None:
                callback(SolverProgress(step=accepted, t=t, nfe=nfe, x=y))
            growth = _MAX_GROWTH if ratio == 0.0 else _SAFETY * ratio ** (-1.0 / _ORDER)
            h = h_try * min(_MAX_GROWTH, max(1.0, growth))
        else:
            rejected += 1
            h = h_try * max(_MIN_SHRINK, _SAFETY * ratio ** (-1.0 / _ORDER))
    return y, SolverStats(nfe=nfe, accepted=accepted, rejected=rejected)
