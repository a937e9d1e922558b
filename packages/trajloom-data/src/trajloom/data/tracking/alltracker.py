"""AllTracker (Harley et al. 2025, ``aharley/alltracker``) from a local clone and weights.

The model tracks every pixel of a query frame at once (dense flow from the query frame
to every other frame, with visibility and confidence maps). Queries are grouped by
frame; each group costs one forward pass over the frames after it and one over the
frames before it (time-reversed), and the dense maps are sampled bilinearly at the
query positions. Frames are resized to a multiple of 8 (the model's stride) and the
tracks mapped back. Visibility is ``visibility * confidence > vis_threshold``, the rule
of the repository's ``test_dense_on_sparse.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cv2
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

__all__ = ["ALLTRACKER_FILES", "AllTracker", "AllTrackerConfig"]

_URL = "https://github.com/aharley/alltracker"
#: Files a clone must hold (relative to its root).
ALLTRACKER_FILES = ("nets/alltracker.py", "nets/blocks.py", "utils/basic.py", "utils/misc.py")


@dataclass(frozen=True)
class AllTrackerConfig:
    """Where the user's AllTracker lives, and how to run it."""

    repo_path: str  # local clone of aharley/alltracker
    weights_path: str  # alltracker.pth (or alltracker_tiny.pth with tiny=True)
    tiny: bool = False  # the small model (basic encoder, no split)
    window_len: int = 16  # the model's temporal window; 16 for the released weights
    iters: int = 4  # refinement iterations per window (the demo's default)
    max_size: int = 1024  # longest side the frames are resized to (then down to multiples of 8)
    vis_threshold: float = 0.6  # visible when visibility * confidence exceeds this
    device: str = "auto"  # "auto": cuda when available, else cpu

    def __post_init__(self) -> None:
        if self.window_len <= 1 or self.iters <= 0 or self.max_size < 8:
            raise ValueError(
                f"AllTrackerConfig: window_len > 1, iters > 0, max_size >= 8 needed; got "
                f"{self.window_len}, {self.iters}, {self.max_size}"
            )
        check_vis_threshold("AllTrackerConfig", self.vis_threshold)

    def to_dict(self) -> dict:
        return asdict(self)


class AllTracker:
    """AllTracker loaded from ``config.repo_path`` and ``config.weights_path`` only."""

    name = "alltracker"

    def __init__(self, config: AllTrackerConfig) -> None:

        self.config = config
        self.root = check_clone(config.repo_path, ALLTRACKER_FILES, "alltracker", _URL)
        weights = check_weights(
            config.weights_path,
            "alltracker",
            "alltracker.pth from https://huggingface.co/aharley/alltracker",
        )
        net_module = import_from_clone(self.root, "nets.alltracker")
        with clone_imports(self.root):
            if config.tiny:
                model = net_module.Net(config.window_len, use_basicencoder=True, no_split=True)
            else:
                model = net_module.Net(config.window_len)
        self.model, self.device = place_model(model, weights, config.device)

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

        prepared = resolve_queries(frames, queries, stride=stride, grid=grid)
        clip, q = prepared.frames, prepared.queries
        t_count, h, w = clip.shape[:3]
        scale = min(1.0, self.config.max_size / max(h, w))
        hm, wm = max(8, int(h * scale) // 8 * 8), max(8, int(w * scale) // 8 * 8)
        resized = np.stack([cv2.resize(f, (wm, hm), interpolation=cv2.INTER_AREA) for f in clip])
        rgbs = torch.from_numpy(resized).permute(0, 3, 1, 2).float()[None].to(self.device)
        sx, sy = wm / w, hm / h
        xy = np.stack([(q[:, 1] + 0.5) * sx - 0.5, (q[:, 2] + 0.5) * sy - 0.5], axis=-1)

        tracks = np.zeros((t_count, len(q), 2), np.float32)
        vis = np.zeros((t_count, len(q)), np.float32)
        conf = np.zeros((t_count, len(q)), np.float32)
        with torch.no_grad(), clone_imports(self.root):
            for frame in np.unique(q[:, 0]).astype(int):
                sel = np.flatnonzero(q[:, 0] == frame)
                pts = torch.from_numpy(xy[sel]).float().to(self.device)
                if frame < t_count - 1:
                    out = self._run(rgbs[:, frame:], pts)
                    tracks[frame:, sel], vis[frame:, sel], conf[frame:, sel] = out
                if frame > 0:
                    out = self._run(rgbs[:, : frame + 1].flip(1), pts)
                    back = [a[::-1] for a in out]
                    tracks[:frame, sel], vis[:frame, sel], conf[:frame, sel] = (
                        a[:-1] for a in back
                    )
                tracks[frame, sel] = xy[sel]
                vis[frame, sel], conf[frame, sel] = 1.0, 1.0
        tracks[..., 0] = (tracks[..., 0] + 0.5) / sx - 0.5
        tracks[..., 1] = (tracks[..., 1] + 0.5) / sy - 0.5
        score = vis * conf
        return prepared.finish(tracks, score > self.config.vis_threshold, score)

    def _run(self, rgbs, pts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Dense tracking from the first frame of ``rgbs "1 t 3 h w"``, sampled at ``pts "k 2"``.

        Returns tracks ``"t k 2"``, visibility ``"t k"`` and confidence ``"t k"``.
        """
        import torch
        import torch.nn.functional as F

        flows, visconf, *_ = self.model.forward_sliding(
            rgbs, iters=self.config.iters, sw=None, is_training=False
        )
        flows, visconf = flows[0].to(pts.device), visconf[0].to(pts.device)  # t 2 h w each
        hm, wm = flows.shape[-2:]
        # grid_sample with align_corners=True maps -1 and 1 to the first and last pixel centres.
        norm = torch.stack([pts[:, 0] / (wm - 1), pts[:, 1] / (hm - 1)], -1) * 2 - 1
        grid = norm[None, None].expand(flows.shape[0], 1, -1, 2)
        maps = torch.cat([flows, visconf], dim=1)  # t 4 h w
        sampled = F.grid_sample(maps, grid, mode="bilinear", align_corners=True)[:, :, 0]  # t 4 k
        tracks = sampled[:, :2].permute(0, 2, 1) + pts[None]
        return (
            tracks.cpu().numpy(),
            sampled[:, 2].clamp(0, 1).cpu().numpy(),
            sampled[:, 3].clamp(0, 1).cpu().numpy(),
        )
