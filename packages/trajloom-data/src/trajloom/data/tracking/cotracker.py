"""CoTracker3 offline (Karaev et al. 2024, ``facebookresearch/co-tracker``) from a local clone.

Follows the repository's ``CoTrackerPredictor`` for sparse queries: frames are resized
to the model resolution (384x512, bilinear, ``align_corners=True``) and query
coordinates scaled by ``(W_model - 1) / (W - 1)``; a 6x6 support grid on frame 0
(:func:`support_grid`, upstream's ``get_points_on_a_grid``: a margin of ``W_model / 64``
= 8 px) is added to the queries; the model runs forward in time and, with
``backward_tracking``, again on the time-reversed clip for the frames before each
query; each query's own frame is set to the query, visible.

Visibility has two upstream rules (``visibility``):

* ``"evaluation"`` (default): ``vis * conf > 0.6``, the rule of upstream's TAP-Vid
  evaluation (``EvaluationPredictor`` multiplies, ``Evaluator`` thresholds at 0.6),
  with which its published occlusion accuracy was measured;
* ``"predictor"``: ``vis > 0.9``, what ``CoTrackerPredictor`` returns.

The result's ``confidence`` is the score the rule thresholds. Weights are read with
``torch.load(weights_only=True)``; nothing is fetched. Upstream's model modules call
``torch.manual_seed(0)`` at import; the caller's RNG state is restored after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from trajloom.data.tracking._clone import (
    check_clone,
    check_vis_threshold,
    check_weights,
    clone_imports,
    import_from_clone,
    place_model,
)
from trajloom.data.tracking.base import TrackResult
from trajloom.data.tracking.tracker import resolve_queries
from trajloom.encoding import GridSpec

__all__ = ["COTRACKER_FILES", "VISIBILITY_RULES", "CoTracker3", "CoTracker3Config", "support_grid"]

_URL = "https://github.com/facebookresearch/co-tracker"
#: Files a clone must hold (relative to its root).
COTRACKER_FILES = (
    "cotracker/__init__.py",
    "cotracker/models/core/cotracker/cotracker3_offline.py",
    "cotracker/models/core/cotracker/cotracker3_online.py",
    "cotracker/models/core/model_utils.py",
)
#: Visibility rule -> its upstream threshold (see the module docstring).
VISIBILITY_RULES = {"evaluation": 0.6, "predictor": 0.9}


@dataclass(frozen=True)
class CoTracker3Config:
    """Where the user's CoTracker3 lives, and how to run it."""

    repo_path: str  # local clone of facebookresearch/co-tracker
    weights_path: str  # scaled_offline.pth (CoTracker3 offline)
    window_len: int = 60  # the offline model's window; 60 for scaled_offline.pth
    iters: int = 6  # refinement iterations (the predictor's value)
    support_grid: int = 6  # extra g x g points on frame 0 that give the model context; 0: none
    # "evaluation": vis * conf > 0.6 (upstream's TAP-Vid evaluation, its published figures);
    # "predictor": vis > 0.9 (what CoTrackerPredictor returns).
    visibility: str = "evaluation"
    vis_threshold: float | None = None  # None: the rule's own threshold (0.6 or 0.9)
    # Frames before each query from a pass over the reversed clip (the predictor's
    # backward_tracking=True); False keeps the forward pass's output there, which is
    # upstream's default and costs half the time when queries are not all on frame 0.
    backward_tracking: bool = True
    device: str = "auto"  # "auto": cuda when available, else cpu

    def __post_init__(self) -> None:
        if self.window_len <= 1 or self.iters <= 0 or self.support_grid < 0:
            raise ValueError(
                f"CoTracker3Config: window_len > 1, iters > 0, support_grid >= 0 needed; got "
                f"{self.window_len}, {self.iters}, {self.support_grid}"
            )
        if self.visibility not in VISIBILITY_RULES:
            raise ValueError(
                f"CoTracker3Config.visibility must be one of {sorted(VISIBILITY_RULES)}, got "
                f"{self.visibility!r}"
            )
        check_vis_threshold("CoTracker3Config", self.threshold)

    @property
    def threshold(self) -> float:
        """The visibility threshold in force: ``vis_threshold`` or the rule's own."""
        if self.vis_threshold is None:
            return VISIBILITY_RULES[self.visibility]
        return self.vis_threshold

    def to_dict(self) -> dict:
        return asdict(self)


def support_grid(size: int, extent: tuple[int, int]) -> np.ndarray:
    """``size x size`` points ``"n 2"`` ``(x, y)`` over an ``extent = (H, W)`` image, row-major.

    Upstream's ``get_points_on_a_grid`` with the default centre: evenly spaced from a
    margin ``m = W / 64`` to ``W - m`` (and ``m`` to ``H - m``); one point: the centre.
    """
    h, w = extent
    if size == 1:
        return np.array([[w / 2, h / 2]])
    margin = w / 64
    yy, xx = np.meshgrid(
        np.linspace(margin, h - margin, size), np.linspace(margin, w - margin, size), indexing="ij"
    )
    return np.stack([xx.ravel(), yy.ravel()], axis=-1)


class CoTracker3:
    """CoTracker3 offline loaded from ``config.repo_path`` and ``config.weights_path`` only."""

    name = "cotracker3"

    def __init__(self, config: CoTracker3Config) -> None:
        self.config = config
        self.root = check_clone(config.repo_path, COTRACKER_FILES, "cotracker3", _URL)
        weights = check_weights(
            config.weights_path,
            "cotracker3",
            "scaled_offline.pth from https://huggingface.co/facebook/cotracker3",
        )
        module = import_from_clone(self.root, "cotracker.models.core.cotracker.cotracker3_offline")
        with clone_imports(self.root):
            model = module.CoTrackerThreeOffline(
                stride=4, corr_radius=3, window_len=config.window_len
            )
        self.model, self.device = place_model(model, weights, config.device)
        self.resolution = tuple(int(v) for v in self.model.model_resolution)  # (H, W)

    def track(
        self,
        frames: np.ndarray | Sequence[np.ndarray],
        queries: np.ndarray | None = None,
        *,
        stride: int | None = None,
        grid: GridSpec | None = None,
    ) -> TrackResult:
        """Track ``queries "n 3"`` ``(t, x, y)``, a ``stride`` grid or a ``GridSpec`` grid."""
        import torch
        import torch.nn.functional as F

        cfg = self.config
        prepared = resolve_queries(frames, queries, stride=stride, grid=grid)
        clip, q = prepared.frames, prepared.queries
        t_count, h, w = clip.shape[:3]
        hm, wm = self.resolution
        video = torch.from_numpy(clip).permute(0, 3, 1, 2).float().to(self.device)
        video = F.interpolate(video, (hm, wm), mode="bilinear", align_corners=True)[None]
        # align_corners scaling: pixel 0 and the last pixel map to each other.
        to_model = np.array([(wm - 1) / (w - 1), (hm - 1) / (h - 1)])
        qm = q.copy()
        qm[:, 1:] *= to_model
        n = len(q)
        if cfg.support_grid:
            xy = support_grid(cfg.support_grid, (hm, wm))
            qm = np.concatenate([qm, np.concatenate([np.zeros((len(xy), 1)), xy], axis=1)])
        queries_t = torch.from_numpy(qm).float()[None].to(self.device)
        with torch.no_grad(), clone_imports(self.root):
            tracks, vis, conf, _ = self.model(video=video, queries=queries_t, iters=cfg.iters)
            if cfg.backward_tracking and q[:, 0].max() > 0:
                flipped = queries_t.clone()
                flipped[..., 0] = t_count - 1 - flipped[..., 0]
                b_tracks, b_vis, b_conf, _ = self.model(
                    video=video.flip(1), queries=flipped, iters=cfg.iters
                )
                before = (
                    torch.arange(t_count, device=self.device)[:, None] < queries_t[0, :, 0][None]
                )
                tracks[0][before] = b_tracks[0].flip(0)[before]
                vis[0][before] = b_vis[0].flip(0)[before]
                conf[0][before] = b_conf[0].flip(0)[before]
        tracks = tracks[0, :, :n].cpu().numpy().astype(np.float64) / to_model
        score = vis[0, :, :n]
        if cfg.visibility == "evaluation":
            score = score * conf[0, :, :n]
        score = score.cpu().numpy()
        frames_q = q[:, 0].astype(int)
        tracks[frames_q, np.arange(n)] = q[:, 1:]  # the query itself is known exactly
        score[frames_q, np.arange(n)] = 1.0
        return prepared.finish(tracks, score > cfg.threshold, score)
