"""AllTracker (Harley et al. 2025, ``aharley/alltracker``) from a local clone and weights.

The model tracks every pixel of a query frame at once (dense flow from the query frame
to every other frame, with visibility and confidence maps). Queries are grouped by
frame; each group costs one ``forward_sliding`` pass over the frames after it and one
over the frames before it (time-reversed), as the repository's ``demo.py`` does for
its ``--query_frame``.

What follows the authors' code, and where it differs on purpose:

* Network: ``Net(window_len)`` (``use_basicencoder=True, no_split=True`` for the tiny
  model) built with ``init_weights=False``, so that torchvision never fetches ImageNet
  ConvNeXt weights (the default would, and the strict load of ``weights_path`` that
  follows overwrites every weight anyway). Nothing is downloaded, ever.
* Resize: the demo's: scale so the longest side is ``image_size`` (up or down),
  truncate each side to a multiple of 8, ``cv2.INTER_LINEAR``. Coordinates are scaled
  plainly, ``x_model = x * W_model / W`` and back, as the demo's tracks are read.
* Sampling: the demo reads the dense maps at whole pixels of the resized frames; here
  each query is sampled bilinearly at its own sub-pixel position (the same numbers
  at whole pixels).
* Device: upstream's ``get_fmaps`` moves frames with ``.cuda()``; this adapter runs
  the same encoder calls on the model's own device instead, so ``device="cpu"`` (and
  ``"auto"`` on a machine without CUDA) works.
* Two frames: ``forward_sliding`` returns the maps of frame 1 without a time axis for
  a 2-frame clip (a query at frame 1 or at ``T - 2``); the adapter adds the axis.
* Size floor: upstream pads frames to multiples of 64 and builds a 5-level
  correlation pyramid over 1/8-resolution features, which needs padded sides of at
  least ``8 * 2**4 = 128`` px: resized sides under 72 px fail inside upstream and are
  refused here first, naming ``image_size``.

Visibility is ``visibility * confidence > vis_threshold`` (0.6), the rule of the
repository's ``test_dense_on_sparse.py``; the demo draws ``confidence > 0.1`` instead.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from trajloom.data.tracking._clone import (
    TrackerError,
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

__all__ = [
    "ALLTRACKER_FILES",
    "AllTracker",
    "AllTrackerConfig",
    "min_model_side",
    "model_size",
]

_URL = "https://github.com/aharley/alltracker"
#: Files a clone must hold (relative to its root).
ALLTRACKER_FILES = ("nets/alltracker.py", "nets/blocks.py", "utils/basic.py", "utils/misc.py")
#: Upstream's fmaps chunk (frames encoded per call in ``get_fmaps``).
_FMAPS_CHUNK = 64


@dataclass(frozen=True)
class AllTrackerConfig:
    """Where the user's AllTracker lives, and how to run it."""

    repo_path: str  # local clone of aharley/alltracker
    weights_path: str  # alltracker.pth (or alltracker_tiny.pth with tiny=True)
    tiny: bool = False  # the small model (basic encoder, no split)
    window_len: int = 16  # the model's temporal window; 16 for the released weights
    iters: int = 4  # refinement iterations per window (the demo's --inference_iters)
    # The demo's --image_size: the longest side is scaled to this (up or down), then each
    # side truncated to a multiple of 8. CPU time grows with its square.
    image_size: int = 1024
    vis_threshold: float = 0.6  # visible when visibility * confidence exceeds this
    device: str = "auto"  # "auto": cuda when available, else cpu

    def __post_init__(self) -> None:
        if self.window_len < 2 or self.window_len % 2 or self.iters <= 0:
            raise ValueError(
                f"AllTrackerConfig: window_len must be even and >= 2 (upstream slides by "
                f"half windows), iters > 0; got {self.window_len}, {self.iters}"
            )
        if self.image_size < min_model_side():
            raise ValueError(
                f"AllTrackerConfig.image_size must be >= {min_model_side()} (upstream's "
                f"correlation pyramid fails on smaller frames), got {self.image_size}"
            )
        check_vis_threshold("AllTrackerConfig", self.vis_threshold)

    def to_dict(self) -> dict:
        return asdict(self)


def min_model_side(corr_levels: int = 5) -> int:
    """The smallest resized side upstream runs: padded to 64, its 1/8 map must hold 2**(L-1).

    A side ``s`` (multiple of 8) is padded to ``ceil(s / 64) * 64``; the pyramid of
    ``corr_levels`` levels needs that to be at least ``8 * 2**(corr_levels - 1)``.
    """
    need = 8 * 2 ** (corr_levels - 1)
    padded_below = -(-need // 64) * 64 - 64  # the largest padded size that is too small
    return padded_below + 8


def model_size(size: tuple[int, int], image_size: int) -> tuple[int, int]:
    """The demo's resize: ``(W, H)`` scaled so the longest side is ``image_size``, each side
    truncated to a multiple of 8."""
    w, h = size
    scale = min(image_size / h, image_size / w)
    return int(w * scale) // 8 * 8, int(h * scale) // 8 * 8


def _fmaps_on_device(self, images_, B, T, sw, is_training):  # upstream get_fmaps signature
    """Upstream ``Net.get_fmaps`` run on the model's own device instead of ``.cuda()``.

    ``images_ "(b t) 3 h w"`` padded frames; returns features ``"(b t) c h/8 w/8"``,
    from the same encoder calls (``fnet``/``cnet`` or ``cnn`` + ``dot_conv``), encoded
    in chunks of 64 frames as upstream does for long clips.
    """
    import torch

    device = next(self.parameters()).device
    out = []
    for start in range(0, images_.shape[0], _FMAPS_CHUNK * B):
        chunk = images_[start : start + _FMAPS_CHUNK * B].to(device)
        if self.use_basicencoder:
            feats = self.fnet(chunk)
            if self.full_split:
                feats = torch.cat([feats, self.cnet(chunk)], dim=1)
        else:
            feats = self.dot_conv(self.cnn(chunk))
        out.append(feats)
    return torch.cat(out)


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
        if "init_weights" not in inspect.signature(net_module.Net).parameters:
            raise TrackerError(
                f"alltracker: nets/alltracker.py in repo_path {str(self.root)!r} has no "
                "Net(init_weights=...), so building it would download ImageNet weights; "
                f"update the clone of {_URL} (checked at c1ed462)"
            )
        options = {"use_basicencoder": True, "no_split": True} if config.tiny else {}
        with clone_imports(self.root):
            model = net_module.Net(config.window_len, init_weights=False, **options)
        model.get_fmaps = types.MethodType(_fmaps_on_device, model)
        self.model, self.device = place_model(model, weights, config.device)
        self.min_side = min_model_side(int(getattr(model, "corr_levels", 5)))

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
        wm, hm = model_size((w, h), self.config.image_size)
        if min(wm, hm) < self.min_side:
            raise TrackerError(
                f"alltracker: {w}x{h} frames resize to {wm}x{hm} at image_size="
                f"{self.config.image_size}, under the {self.min_side} px upstream's "
                "correlation pyramid needs; raise image_size"
            )
        resized = np.stack([cv2.resize(f, (wm, hm), interpolation=cv2.INTER_LINEAR) for f in clip])
        rgbs = torch.from_numpy(resized).permute(0, 3, 1, 2).float()[None].to(self.device)
        sx, sy = wm / w, hm / h
        xy = q[:, 1:] * np.array([sx, sy])

        tracks = np.zeros((t_count, len(q), 2), np.float32)
        vis = np.zeros((t_count, len(q)), np.float32)
        conf = np.zeros((t_count, len(q)), np.float32)
        with torch.no_grad(), clone_imports(self.root):
            for frame in np.unique(q[:, 0]).astype(int):
                sel = np.flatnonzero(q[:, 0] == frame)
                pts = torch.from_numpy(xy[sel]).float()
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
        tracks /= np.array([sx, sy], np.float32)
        score = vis * conf
        return prepared.finish(tracks, score > self.config.vis_threshold, score)

    def _run(self, rgbs, pts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Dense tracking from the first frame of ``rgbs "1 t 3 h w"``, sampled at ``pts "k 2"``.

        Returns tracks ``"t k 2"``, visibility ``"t k"`` and confidence ``"t k"`` (CPU).
        """
        import torch
        import torch.nn.functional as F

        flows, visconf, *_ = self.model.forward_sliding(
            rgbs, iters=self.config.iters, sw=None, is_training=False
        )
        flows, visconf = flows[0].float().cpu(), visconf[0].float().cpu()
        if flows.ndim == 3:  # a 2-frame clip: upstream returns frame 1 alone, "2 h w"
            flows = torch.stack([torch.zeros_like(flows), flows])
            visconf = torch.stack([torch.ones_like(visconf), visconf])
        hm, wm = flows.shape[-2:]
        # grid_sample with align_corners=True maps -1 and 1 to the first and last pixel centres.
        norm = torch.stack([pts[:, 0] / (wm - 1), pts[:, 1] / (hm - 1)], -1) * 2 - 1
        grid = norm[None, None].expand(flows.shape[0], 1, -1, 2)
        maps = torch.cat([flows, visconf], dim=1)  # t 4 h w
        sampled = F.grid_sample(maps, grid, mode="bilinear", align_corners=True)[:, :, 0]  # t 4 k
        tracks = sampled[:, :2].permute(0, 2, 1) + pts[None]
        return (
            tracks.numpy(),
            sampled[:, 2].clamp(0, 1).numpy(),
            sampled[:, 3].clamp(0, 1).numpy(),
        )
