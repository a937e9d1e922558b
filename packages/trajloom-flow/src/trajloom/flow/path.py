"""The rectified-flow probability path over future latents (paper §3.3.1–3.3.2, app. A.2, E.1).

All tensors are normalized VAE latents, ``"b t n c"`` (latent steps, grid tokens,
channels). Flow time ``t`` runs from 0 (source) to 1 (data). Randomness is passed in:
these functions draw nothing unless handed a ``torch.Generator``.

* Source state (boundary anchoring, eq. 7/19): ``x0 = ε`` with ``ε ~ N(0, I)``, and the first
  ``anchor_slices`` future steps replaced by the last history latent plus ``anchor_std``
  noise. The paper's general form anchors the whole horizon; in practice (and in the
  release) only the first slice, ``anchor_slices = 1``, with std 0.1.
* Linear path (eq. 8): ``x_t = (1 - t) x0 + t x1``, plus the "tube" noise ``σ ε'`` of
  app. A.2 (released ``fm_sigma = 0.05``) during training; the target is unchanged.
* Velocity target: ``u = x1 - x0``.
"""

from __future__ import annotations

import torch

__all__ = [
    "anchor_source",
    "draw_source",
    "interpolate",
    "velocity_target",
]


def _expand_time(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if t.ndim != 1 or t.shape[0] != like.shape[0]:
        raise ValueError(
            f"t must be 'b' (one flow time per sample), got shape {tuple(t.shape)} for a "
            f"batch of {like.shape[0]}"
        )
    return t.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def anchor_source(
    noise: torch.Tensor,
    z_hist: torch.Tensor,
    anchor_noise: torch.Tensor,
    *,
    anchor_std: float = 0.1,
    anchor_slices: int = 1,
) -> torch.Tensor:
    """Boundary-anchored source state (eq. 7): ``x0[:, :k] = z_hist[:, -1] + std * ξ``.

    ``noise: "b tf n c"`` standard normal, ``z_hist: "b th n c"`` normalized history
    latents, ``anchor_noise: "b k n c"`` standard normal for the ``k = anchor_slices``
    anchored steps. Steps ``k..tf-1`` keep ``noise``. Returns a new tensor.
    """
    if noise.ndim != 4 or z_hist.ndim != 4:
        raise ValueError(
            f"noise and z_hist must be 'b t n c', got {tuple(noise.shape)} and "
            f"{tuple(z_hist.shape)}"
        )
    if z_hist.shape[0] != noise.shape[0] or z_hist.shape[2:] != noise.shape[2:]:
        raise ValueError(
            f"z_hist {tuple(z_hist.shape)} and noise {tuple(noise.shape)} must share b, n, c"
        )
    if not 1 <= anchor_slices <= noise.shape[1]:
        raise ValueError(
            f"anchor_slices must be in [1, {noise.shape[1]}] (future latent steps), got "
            f"{anchor_slices}"
        )
    expected = (noise.shape[0], anchor_slices, *noise.shape[2:])
    if tuple(anchor_noise.shape) != expected:
        raise ValueError(
            f"anchor_noise must have shape {expected} ('b k n c', k = anchor_slices), got "
            f"{tuple(anchor_noise.shape)}"
        )
    anchored = z_hist[:, -1:].to(noise.dtype) + anchor_std * anchor_noise.to(noise.dtype)
    return torch.cat([anchored, noise[:, anchor_slices:]], dim=1)


def draw_source(
    z_hist: torch.Tensor,
    num_future: int,
    *,
    generator: torch.Generator | None = None,
    anchor: bool = True,
    anchor_std: float = 0.1,
    anchor_slices: int = 1,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw a source state ``"b tf n c"`` for the history latents ``z_hist: "b th n c"``.

    The draws come in the released order — the full ``"b tf n c"`` Gaussian first, then
    the ``"b k n c"`` anchor noise — so one generator seeded like the released
    ``noise_seed`` gives the released source state. ``anchor=False`` is the
    "w/o anchoring" ablation (app. D.3): pure Gaussian, no anchor draw.
    """
    b, _, n, c = z_hist.shape
    shape = (b, num_future, n, c)
    noise = torch.randn(shape, generator=generator, device=z_hist.device, dtype=dtype)
    if not anchor:
        return noise
    anchor_noise = torch.randn(
        (b, anchor_slices, n, c), generator=generator, device=z_hist.device, dtype=dtype
    )
    return anchor_source(
        noise, z_hist, anchor_noise, anchor_std=anchor_std, anchor_slices=anchor_slices
    )


def interpolate(
    x0: torch.Tensor,
    x1: torch.Tensor,
    t: torch.Tensor,
    *,
    sigma: float = 0.0,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Point on the linear path (eq. 8): ``x_t = (1 - t) x0 + t x1 (+ sigma * noise)``.

    ``x0, x1: "b ..."``, ``t: "b"``. ``sigma > 0`` needs ``noise`` of ``x0``'s shape: a
    Gaussian tube of constant width around the straight path (app. A.2 "tube noise",
    released ``fm_sigma``), which leaves the velocity target ``x1 - x0`` unchanged.
    """
    if x0.shape != x1.shape:
        raise ValueError(f"x0 {tuple(x0.shape)} and x1 {tuple(x1.shape)} must match")
    tt = _expand_time(t, x0)
    xt = (1 - tt) * x0 + tt * x1
    if sigma:
        if noise is None or noise.shape != x0.shape:
            raise ValueError(
                f"sigma={sigma} needs noise of shape {tuple(x0.shape)}, got "
                f"{None if noise is None else tuple(noise.shape)}"
            )
        xt = xt + sigma * noise
    return xt


def velocity_target(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """Velocity of the linear path, ``u = x1 - x0`` (constant in t)."""
    if x0.shape != x1.shape:
        raise ValueError(f"x0 {tuple(x0.shape)} and x1 {tuple(x1.shape)} must match")
    return x1 - x0
