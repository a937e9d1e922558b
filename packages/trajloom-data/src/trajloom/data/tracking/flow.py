"""The built-in tracker: chained dense optical flow (OpenCV DIS), no learned weights.

For each pair of consecutive frames the forward flow ``F_t: t -> t+1`` and the
backward flow ``B_t: t+1 -> t`` are computed once (DIS on grayscale) and reused by
every query and by both directions. A point at ``p`` on frame ``t`` moves to
``p + F_t(p)`` (bilinear sampling at the sub-pixel position); backward tracking uses
``B`` the same way. Visibility is the forward-backward check of the step that reached
the frame (Sundaram et al. 2010): with ``f = F_t(p)`` and ``b = B_t(p + f)`` the step is
consistent when ``|f + b|^2 <= fb_alpha * (|f|^2 + |b|^2) + fb_beta``. A point is hidden
only on lasting evidence: after ``occlusion_frames`` consecutive steps that fail the check
without LK finding its query patch (one failed step at a motion boundary is common on
real video and seldom an occlusion), or once it is more than ``outside_margin`` pixels
beyond the image (``None``: never for that).

Against drift, ``refine="lk"`` re-anchors each point to its query frame on every
frame: a pyramidal Lucas-Kanade step (``cv2.calcOpticalFlowPyrLK``) aligns the patch
around the query position in the query frame with the current frame, starting from
the chained position; the result replaces the chained position when it converged,
matches well (mean absolute intensity error <= ``lk_max_error``) and moved it by at
most ``lk_max_shift`` pixels. Errors then no longer accumulate while the patch keeps
its appearance; when it does not, the chain carries on alone.

A point that fails the check keeps following the flow by default
(``occluded_motion="flow"``) and is visible again once the check passes;
``"extrapolate"`` instead lets it coast hidden on its last velocity until LK finds its
patch again, which pays on rigid synthetic scenes but not on real articulated motion.
Memory: flows are kept only for pairs that both directions need (between the earliest
and the latest query frame); for queries on one frame it stays at two frames' worth.
Cost per frame pair: two DIS calls, plus one LK call per distinct query frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from trajloom.data.tracking.base import TrackResult
from trajloom.data.tracking.sampling import bilinear_sample
from trajloom.data.tracking.tracker import resolve_queries
from trajloom.encoding import GridSpec

__all__ = ["DIS_PRESETS", "FlowTracker", "FlowTrackerConfig", "dis_flow"]

#: DIS presets by name: speed against accuracy (ultrafast ~2 ms, medium ~23 ms per
#: 832x480 pair on 2 cores).
DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}

_REFINES = ("none", "lk")


@dataclass(frozen=True)
class FlowTrackerConfig:
    """Settings of the chained-flow tracker; the defaults are the measured best trade-off."""

    preset: str = "medium"  # DIS preset: "ultrafast" | "fast" | "medium" (slower, more exact)
    finest_scale: int | None = None  # DIS finest pyramid level; None: the preset's (1 = half size)
    scale: float = 1.0  # compute flow at this fraction of the frame size (0.5: ~4x faster)
    # Forward-backward check: relative part (of |f|^2 + |b|^2) and absolute part (px^2 at the
    # flow resolution). Sundaram et al.'s 0.01 / 0.5 flag too many visible joints on real
    # video (occlusion accuracy 80% against 84% here, BENCHMARKS); looser is better there.
    fb_alpha: float = 0.1
    fb_beta: float = 8.0
    refine: str = "lk"  # "lk": re-anchor to the query frame's patch each frame; "none": chain only
    lk_window: int = 15  # LK patch side in pixels at the flow resolution (odd)
    lk_levels: int = (
        2  # LK pyramid levels above the base (covers chained error up to ~2^levels*win/2)
    )
    lk_max_error: float = 12.0  # accept LK when its mean absolute intensity error is at most this
    lk_max_shift: float = 8.0  # ...and it moved the chained position by at most this, pixels
    # "flow": a point failing the forward-backward check follows the flow and is visible
    # again whenever the check passes. "extrapolate": it coasts on its last visible
    # velocity, hidden, until LK finds its query patch again (needs refine="lk"); better
    # on rigid synthetic scenes, much worse on real articulated motion (BENCHMARKS).
    occluded_motion: str = "flow"
    # Hide a point only on lasting evidence: after this many consecutive steps that fail the
    # forward-backward check without LK finding the query patch (1: every failed step hides,
    # the rule of Sundaram et al.). Real video favours "visible unless sure" (BENCHMARKS).
    occlusion_frames: int = 8
    # Hidden once this many pixels (flow resolution) beyond the image edge; None: never for
    # that. On the real sets a chained track past the edge is more often drift than a point
    # leaving the view (None: OA at the "always visible" floor), on synthetic scenes points
    # really leave (None: OA 94 -> 65); BENCHMARKS, Tracking 4.
    outside_margin: float | None = 0.0
    threads: int = 0  # OpenCV threads; 0 leaves OpenCV's setting alone

    def __post_init__(self) -> None:
        if self.preset not in DIS_PRESETS:
            raise ValueError(
                f"FlowTrackerConfig.preset must be one of {sorted(DIS_PRESETS)}, got {self.preset!r}"
            )
        if self.finest_scale is not None and self.finest_scale < 0:
            raise ValueError(
                f"FlowTrackerConfig.finest_scale must be >= 0 or None, got {self.finest_scale}"
            )
        if not 0.0 < self.scale <= 1.0:
            raise ValueError(f"FlowTrackerConfig.scale must be in (0, 1], got {self.scale}")
        if self.fb_alpha < 0 or self.fb_beta < 0:
            raise ValueError(
                f"FlowTrackerConfig.fb_alpha and fb_beta must be >= 0, got "
                f"{self.fb_alpha}, {self.fb_beta}"
            )
        if self.refine not in _REFINES:
            raise ValueError(
                f"FlowTrackerConfig.refine must be one of {_REFINES}, got {self.refine!r}"
            )
        if self.lk_window < 3 or self.lk_window % 2 == 0:
            raise ValueError(
                f"FlowTrackerConfig.lk_window must be an odd int >= 3, got {self.lk_window}"
            )
        if self.lk_levels < 0 or self.lk_max_error <= 0 or self.lk_max_shift <= 0:
            raise ValueError(
                "FlowTrackerConfig: lk_levels must be >= 0, lk_max_error and lk_max_shift > 0; "
                f"got {self.lk_levels}, {self.lk_max_error}, {self.lk_max_shift}"
            )
        if self.occluded_motion not in ("extrapolate", "flow"):
            raise ValueError(
                "FlowTrackerConfig.occluded_motion must be 'extrapolate' or 'flow', got "
                f"{self.occluded_motion!r}"
            )
        if self.occluded_motion == "extrapolate" and self.refine != "lk":
            raise ValueError(
                "FlowTrackerConfig: occluded_motion='extrapolate' needs refine='lk' (LK is what "
                "finds a hidden point again); use occluded_motion='flow' with refine='none'"
            )
        if self.occlusion_frames < 1 or (
            self.outside_margin is not None and not self.outside_margin >= 0
        ):
            raise ValueError(
                "FlowTrackerConfig: occlusion_frames must be >= 1 and outside_margin >= 0; got "
                f"{self.occlusion_frames}, {self.outside_margin}"
            )
        if self.threads < 0:
            raise ValueError(f"FlowTrackerConfig.threads must be >= 0, got {self.threads}")

    def to_dict(self) -> dict:
        return asdict(self)


def dis_flow(gray0: np.ndarray, gray1: np.ndarray, preset: str = "medium") -> np.ndarray:
    """Dense optical flow ``"h w 2"`` (dx, dy) pixels from ``gray0 "h w"`` to ``gray1``, uint8."""
    # The stubs type the output array `flow` as required; OpenCV allocates it when None.
    return _make_dis(preset).calc(gray0, gray1, None)  # type: ignore[call-overload]


def _make_dis(preset: str) -> cv2.DISOpticalFlow:
    if preset not in DIS_PRESETS:
        raise ValueError(f"preset must be one of {sorted(DIS_PRESETS)}, got {preset!r}")
    return cv2.DISOpticalFlow.create(DIS_PRESETS[preset])


class _Clip:
    """Grayscale frames at the flow resolution and the flows between neighbours.

    Flows of a pair are computed on first use. Pairs that both tracking directions need
    (those between the earliest and the latest query frame) are kept; others are
    dropped once used, so memory stays flat for queries on one frame.
    """

    def __init__(self, frames: np.ndarray, cfg: FlowTrackerConfig, keep: range) -> None:
        self.frames = frames
        self.cfg = cfg
        h, w = frames.shape[1:3]
        self.size = (max(2, round(w * cfg.scale)), max(2, round(h * cfg.scale)))
        self.dis = _make_dis(cfg.preset)
        if cfg.finest_scale is not None:
            self.dis.setFinestScale(cfg.finest_scale)
        self.keep = keep
        self._gray: dict[int, np.ndarray] = {}
        self._pairs: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def gray(self, t: int) -> np.ndarray:
        g = self._gray.get(t)
        if g is None:
            g = cv2.cvtColor(self.frames[t], cv2.COLOR_RGB2GRAY)
            if g.shape[::-1] != self.size:
                g = cv2.resize(g, self.size, interpolation=cv2.INTER_AREA)
            self._gray[t] = g
        return g

    def forget_gray(self, keep: set[int]) -> None:
        for t in [t for t in self._gray if t not in keep]:
            del self._gray[t]

    def pair(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """``(F_t, B_t)``: flows ``t -> t+1`` and ``t+1 -> t``, each ``"h w 2"``."""
        cached = self._pairs.get(t)
        if cached is not None:
            return cached
        g0, g1 = self.gray(t), self.gray(t + 1)
        # The stubs type the output array `flow` as required; OpenCV allocates it when None.
        out = (
            self.dis.calc(g0, g1, None),  # type: ignore[call-overload]
            self.dis.calc(g1, g0, None),  # type: ignore[call-overload]
        )
        if t in self.keep:
            self._pairs[t] = out
        return out


class FlowTracker:
    """Chained DIS optical flow with forward-backward occlusion and LK re-anchoring.

    ``FlowTracker(FlowTrackerConfig(...)).track(frames, queries)``; see the module
    docstring for the method and :class:`FlowTrackerConfig` for the settings.
    """

    name = "flow"

    def __init__(self, config: FlowTrackerConfig | None = None) -> None:
        self.config = config or FlowTrackerConfig()

    def track(
        self,
        frames: np.ndarray | Sequence[np.ndarray],
        queries: np.ndarray | None = None,
        *,
        stride: int | None = None,
        grid: GridSpec | None = None,
    ) -> TrackResult:
        """Track ``queries "n 3"`` rows ``(t, x, y)``, a ``stride`` grid or a ``GridSpec`` grid.

        ``frames``: ``"t h w 3"`` uint8 RGB (see ``trajloom.data.tracking.base`` for the
        accepted forms). Returns tracks ``"t n 2"`` in pixels of ``frames`` (of the
        ``GridSpec`` when ``grid`` is given) and visibility ``"t n"``.
        """
        prepared = resolve_queries(frames, queries, stride=stride, grid=grid)
        if self.config.threads:
            previous = cv2.getNumThreads()
            cv2.setNumThreads(self.config.threads)
        try:
            tracks, visible = self._track(prepared.frames, prepared.queries)
        finally:
            if self.config.threads:
                cv2.setNumThreads(previous)
        return prepared.finish(tracks, visible)

    def _track(self, frames: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        t_count, h, w = frames.shape[:3]
        qt = queries[:, 0].astype(np.intp)
        clip = _Clip(frames, cfg, keep=range(int(qt.min()), int(qt.max())))
        sx, sy = clip.size[0] / w, clip.size[1] / h
        # Positions are tracked at the flow resolution, pixel centres mapped to centres.
        start = np.stack(
            [(queries[:, 1] + 0.5) * sx - 0.5, (queries[:, 2] + 0.5) * sy - 0.5], axis=-1
        ).astype(np.float32)
        tracks = np.zeros((t_count, len(queries), 2), np.float32)
        visible = np.zeros((t_count, len(queries)), bool)
        self._sweep(clip, qt, start, tracks, visible, forward=True)
        if qt.max() > 0:
            self._sweep(clip, qt, start, tracks, visible, forward=False)
        tracks[..., 0] = (tracks[..., 0] + 0.5) / sx - 0.5
        tracks[..., 1] = (tracks[..., 1] + 0.5) / sy - 0.5
        return tracks, visible

    def _sweep(
        self,
        clip: _Clip,
        qt: np.ndarray,
        start: np.ndarray,
        tracks: np.ndarray,
        visible: np.ndarray,
        *,
        forward: bool,
    ) -> None:
        """Fill ``tracks``/``visible`` after (forward) or before (backward) each query frame."""
        cfg = self.config
        t_count = tracks.shape[0]
        w, h = clip.size
        anchors = np.unique(qt)
        frames_order = range(t_count) if forward else range(t_count - 1, -1, -1)
        cur = start.copy()
        velocity = np.zeros_like(start)
        occluded = np.zeros(len(qt), bool)
        streak = np.zeros(len(qt), np.intp)  # consecutive failed steps without the patch found
        active = np.zeros(len(qt), bool)
        hold = cfg.occluded_motion == "extrapolate"
        for t in frames_order:
            starting = qt == t
            streak[starting] = 0
            cur[starting] = start[starting]
            velocity[starting] = 0.0
            occluded[starting] = False
            active |= starting
            tracks[t, starting] = start[starting]
            visible[t, starting] = True
            nxt = t + 1 if forward else t - 1
            if not 0 <= nxt < t_count:
                break
            idx = np.flatnonzero(active)
            if idx.size == 0:
                continue
            fwd_flow, bwd_flow = clip.pair(t) if forward else clip.pair(nxt)[::-1]
            p = cur[idx]
            f = bilinear_sample(fwd_flow, p)
            moved = p + f
            b = bilinear_sample(bwd_flow, moved)
            err = np.sum((f + b) ** 2, axis=-1)
            bound = cfg.fb_alpha * (np.sum(f**2, -1) + np.sum(b**2, -1)) + cfg.fb_beta
            consistent = err <= bound
            if hold:
                # Flow at a hidden point describes its occluder: coast on the last
                # visible velocity until the query patch is found again.
                lost = occluded[idx] | ~consistent
                moved[lost] = p[lost] + velocity[idx[lost]]
                moved, found = self._reanchor(clip, qt[idx], start[idx], moved, nxt)
                lost &= ~found
                occluded[idx] = lost
                seen = ~lost
                velocity[idx[seen]] = moved[seen] - p[seen]
            else:
                found = np.zeros(len(idx), bool)
                if cfg.refine == "lk":
                    moved, found = self._reanchor(clip, qt[idx], start[idx], moved, nxt)
                streak[idx] = np.where(consistent | found, 0, streak[idx] + 1)
                seen = streak[idx] < cfg.occlusion_frames
            m = np.inf if cfg.outside_margin is None else cfg.outside_margin + 0.5
            inside = (
                (moved[:, 0] >= -m)
                & (moved[:, 0] <= w - 1 + m)
                & (moved[:, 1] >= -m)
                & (moved[:, 1] <= h - 1 + m)
            )
            cur[idx] = moved
            tracks[nxt, idx] = moved
            visible[nxt, idx] = seen & inside
            if cfg.refine == "lk":
                clip.forget_gray(set(anchors.tolist()) | {nxt})
            else:
                clip.forget_gray({nxt})

    def _reanchor(
        self,
        clip: _Clip,
        qt: np.ndarray,
        start: np.ndarray,
        moved: np.ndarray,
        t: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """LK-align each point's query-frame patch with frame ``t``, from ``moved "n 2"``.

        Returns the positions ``"n 2"`` (refined where LK was accepted) and the accepted
        mask ``"n"``.
        """
        cfg = self.config
        out = moved.copy()
        accepted = np.zeros(len(moved), bool)
        target = clip.gray(t)
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 0.01)
        for q in np.unique(qt):
            if q == t:
                continue
            sel = np.flatnonzero(qt == q)
            refined, status, error = cv2.calcOpticalFlowPyrLK(
                clip.gray(int(q)),
                target,
                start[sel].copy(),
                moved[sel].copy(),
                winSize=(cfg.lk_window, cfg.lk_window),
                maxLevel=cfg.lk_levels,
                criteria=criteria,
                flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
            )
            refined = refined.reshape(-1, 2)
            shift = np.linalg.norm(refined - moved[sel], axis=-1)
            ok = (
                (status.ravel() == 1)
                & (error.ravel() <= cfg.lk_max_error)
                & (shift <= cfg.lk_max_shift)
                & np.isfinite(refined).all(-1)
            )
            out[sel[ok]] = refined[ok]
            accepted[sel[ok]] = True
        return out, accepted
