"""Non-learned baselines for future trajectories: static, constant velocity, a fitted line.

Both read only the history tracks and return futures in the pipeline's layout, so that
evaluation (``apps/train``, ``apps/bench``) scores them like the generator:

* :func:`static_future` — every point stays at its last history position.
* :func:`constant_velocity_future` — every point keeps moving with its last velocity,
  ``(x[-1] - x[-1-k]) / k`` averaged over the last ``k`` frames (``window``).
* :func:`linear_future` — a least-squares line through each point's last ``L`` history
  positions, extrapolated (``window`` = L >= 2; L = 2 is constant velocity over 1 frame).

A forecasting model is only as good as its margin over these tuned as well as it is
(Schöller et al. 2020): evaluations choose ``window`` on a development split.

Visibility holds the last history visibility; with ``spec`` given, points that leave the
image are marked invisible and positions are clipped to it (the released rule for
generated tracks). The futures are deterministic, so the ``num_samples`` samples are
identical copies. The WHN-style generator configuration lives in
:mod:`trajloom.flow.pipeline` (``PipelineConfig(mode="whn")``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trajloom.encoding import GridSpec, check_tracks, check_visibility

__all__ = [
    "BaselineOutput",
    "clip_to_image",
    "constant_velocity_future",
    "linear_future",
    "static_future",
]

# Released clipping margin: x in [0, W - 1 - 1e-3], y in [0, H - 1 - 1e-3].
CLIP_EPS = 1e-3


@dataclass(frozen=True)
class BaselineOutput:
    """Futures of a baseline; batch dimension only when the input had one."""

    tracks: torch.Tensor  # "[b] s tf n 2" pixels
    visibility: torch.Tensor  # "[b] s tf n" bool


def clip_to_image(tracks: torch.Tensor, spec: GridSpec) -> torch.Tensor:
    """Clip pixel tracks ``"... 2"`` to ``[0, W - 1 - 1e-3] x [0, H - 1 - 1e-3]`` (released)."""
    hi = torch.tensor(
        [spec.width - 1 - CLIP_EPS, spec.height - 1 - CLIP_EPS],
        device=tracks.device,
        dtype=tracks.dtype,
    )
    return torch.minimum(tracks.clamp_min(0.0), hi)


def _inside(tracks: torch.Tensor, spec: GridSpec) -> torch.Tensor:
    x, y = tracks[..., 0], tracks[..., 1]
    return (x >= 0) & (x <= spec.width - 1) & (y >= 0) & (y <= spec.height - 1)


def _prepare(
    hist_tracks: torch.Tensor, hist_vis: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    check_tracks(hist_tracks, "hist_tracks", min_ndim=3)
    if hist_tracks.dim() not in (3, 4):
        raise ValueError(
            f"hist_tracks must be 't n 2' or 'b t n 2', got shape {tuple(hist_tracks.shape)}"
        )
    if hist_vis is None:
        hist_vis = torch.ones(hist_tracks.shape[:-1], dtype=torch.bool, device=hist_tracks.device)
    check_visibility(hist_vis, tuple(hist_tracks.shape), "hist_vis")
    batched = hist_tracks.dim() == 4
    if not batched:
        hist_tracks, hist_vis = hist_tracks[None], hist_vis[None]
    return hist_tracks.float(), hist_vis, batched


def _finish(
    future: torch.Tensor,
    last_vis: torch.Tensor,
    num_samples: int,
    spec: GridSpec | None,
    batched: bool,
) -> BaselineOutput:
    vis = last_vis[:, None].expand(future.shape[:-1])
    if spec is not None:
        vis = vis & _inside(future, spec)
        future = clip_to_image(future, spec)
    tracks = future[:, None].expand(-1, num_samples, -1, -1, -1).contiguous()
    vis = vis[:, None].expand(-1, num_samples, -1, -1).contiguous()
    if not batched:
        tracks, vis = tracks[0], vis[0]
    return BaselineOutput(tracks=tracks, visibility=vis)


def static_future(
    hist_tracks: torch.Tensor,
    hist_vis: torch.Tensor | None,
    num_future: int,
    *,
    num_samples: int = 1,
    spec: GridSpec | None = None,
) -> BaselineOutput:
    """Hold each point at its last history position for ``num_future`` frames.

    ``hist_tracks: "[b] t n 2"`` pixels, ``hist_vis: "[b] t n"`` bool or None (all visible).
    Returns tracks ``"[b] s tf n 2"`` and visibility ``"[b] s tf n"``.
    """
    tracks, vis, batched = _prepare(hist_tracks, hist_vis)
    future = tracks[:, -1:].expand(-1, num_future, -1, -1)
    return _finish(future, vis[:, -1], num_samples, spec, batched)


def constant_velocity_future(
    hist_tracks: torch.Tensor,
    hist_vis: torch.Tensor | None,
    num_future: int,
    *,
    window: int = 1,
    num_samples: int = 1,
    spec: GridSpec | None = None,
) -> BaselineOutput:
    """Extrapolate each point with its mean velocity over the last ``window`` frames.

    ``x[T - 1 + j] = x[T - 1] + j (x[T - 1] - x[T - 1 - k]) / k`` for ``j = 1..num_future``.
    Shapes as in :func:`static_future`.
    """
    tracks, vis, batched = _prepare(hist_tracks, hist_vis)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive int, got {window!r}")
    if tracks.shape[1] <= window:
        raise ValueError(
            f"window={window} needs more than {window} history frames, got {tracks.shape[1]}"
        )
    velocity = (tracks[:, -1] - tracks[:, -1 - window]) / window  # "b n 2"
    steps = torch.arange(1, num_future + 1, device=tracks.device, dtype=tracks.dtype)
    future = tracks[:, -1, None] + steps[None, :, None, None] * velocity[:, None]
    return _finish(future, vis[:, -1], num_samples, spec, batched)


def linear_future(
    hist_tracks: torch.Tensor,
    hist_vis: torch.Tensor | None,
    num_future: int,
    *,
    window: int = 8,
    num_samples: int = 1,
    spec: GridSpec | None = None,
) -> BaselineOutput:
    """Extrapolate the least-squares line through each point's last ``window`` positions.

    With times ``s = 0 .. L-1`` for history frames ``T-L .. T-1`` and the fit
    ``x(s) = a + b s``, future frame ``j = 1..num_future`` is ``a + b (L - 1 + j)``. Every
    history position counts (a tracker's occluded positions are its best guess, as for
    constant velocity). Shapes as in :func:`static_future`.
    """
    tracks, vis, batched = _prepare(hist_tracks, hist_vis)
    if isinstance(window, bool) or not isinstance(window, int) or window < 2:
        raise ValueError(f"window must be an int >= 2 (frames of the fit), got {window!r}")
    if tracks.shape[1] < window:
        raise ValueError(
            f"window={window} needs at least {window} history frames, got {tracks.shape[1]}"
        )
    recent = tracks[:, -window:].double()  # "b l n 2"
    s = torch.arange(window, device=tracks.device, dtype=torch.float64)
    s_mean = s.mean()
    centred = (s - s_mean)[None, :, None, None]
    x_mean = recent.mean(dim=1)  # "b n 2"
    slope = (centred * (recent - x_mean[:, None])).sum(dim=1) / ((s - s_mean) ** 2).sum()
    steps = torch.arange(1, num_future + 1, device=tracks.device, dtype=torch.float64)
    at = (window - 1 + steps - s_mean)[None, :, None, None]
    future = (x_mean[:, None] + at * slope[:, None]).to(tracks.dtype)
    return _finish(future, vis[:, -1], num_samples, spec, batched)
