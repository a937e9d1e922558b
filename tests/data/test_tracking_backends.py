"""AllTracker and CoTracker3 backends: what is missing is named; loading is real.

The learned models are not available here (no weights, no network), so the loading and
plumbing code runs against small stand-in clones written by these tests: files at the
paths the real repositories use, with a model class of the same name and call signature
whose output is known in closed form (a constant displacement). They check the import
scoping, ``weights_only`` loading, query grouping, resizing and coordinate mapping, not
the models' accuracy.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from trajloom.data.tracking import TrackerError, make_tracker
from trajloom.data.tracking.alltracker import ALLTRACKER_FILES
from trajloom.data.tracking.cotracker import COTRACKER_FILES, support_grid

# AllTracker's Net, with the upstream behaviours an adapter must cope with: building it
# with the default init_weights=True would download (torchvision's ImageNet ConvNeXt),
# get_fmaps moves frames with .cuda(), 2-frame passes return frame 1 without a time
# axis, and frames padded (to 64) under 128 px fail in the correlation pyramid. Its
# output is known in closed form: a constant displacement (dx, dy) per frame index,
# visibility 1 and confidence 0.9.
ALLTRACKER_NET = textwrap.dedent(
    """
    import urllib.error
    import torch
    import utils.misc  # the real module imports its siblings by top-level name

    class Net(torch.nn.Module):
        def __init__(self, seqlen, use_basicencoder=False, no_split=False, init_weights=True):
            super().__init__()
            if init_weights:
                raise urllib.error.URLError("stand-in: init_weights=True downloads ConvNeXt")
            self.seqlen = seqlen
            self.use_basicencoder, self.full_split, self.corr_levels = use_basicencoder, False, 5
            self.fnet = self.cnn = torch.nn.AvgPool2d(8)
            self.dot_conv = torch.nn.Identity()
            self.step = torch.nn.Parameter(torch.zeros(2))
            self.seen = []  # frames given to forward_sliding, for the tests

        def get_fmaps(self, images_, B, T, sw, is_training):
            if not is_training:
                images_ = images_.cuda()  # as upstream: fails without CUDA
            return self.cnn(images_)

        def forward_sliding(self, rgbs, iters=4, sw=None, is_training=False):
            b, t, c, h, w = rgbs.shape
            self.seen.append(rgbs.clone())
            if -(-h // 64) * 64 < 128 or -(-w // 64) * 64 < 128:
                raise RuntimeError("adaptive_avg_pool2d(): non-zero size needed")
            fmaps = self.get_fmaps(rgbs.reshape(b * t, c, h, w), b, t, sw, is_training)
            assert fmaps.shape[-2:] == (h // 8, w // 8)
            k = torch.arange(t, dtype=torch.float32).view(1, t, 1, 1, 1)
            flows = k * self.step.view(1, 1, 2, 1, 1) * torch.ones(b, t, 2, h, w)
            visconf = torch.ones(b, t, 2, h, w)
            visconf[:, :, 1] = 0.9
            if t <= 2:  # upstream: frame 1 alone, "b 2 h w"
                return flows[:, 1].cpu(), visconf[:, 1].cpu(), [], []
            return flows.cpu(), visconf.cpu(), None, None
    """
)

# CoTracker3 offline: tracks move by a constant step per frame from the query frame;
# visibility 0.95 on even frames and 0.85 on odd ones, confidence 0.7. Like upstream it
# seeds torch's global RNG at import.
COTRACKER_MODEL = textwrap.dedent(
    """
    import torch
    from cotracker.models.core.model_utils import helper

    torch.manual_seed(0)

    class CoTrackerThreeOffline(torch.nn.Module):
        def __init__(self, stride=4, corr_radius=3, window_len=60):
            super().__init__()
            self.model_resolution = (96, 128)
            self.step = torch.nn.Parameter(torch.zeros(2))
            self.queries = []  # queries given to forward, for the tests

        def forward(self, video, queries, iters=4):
            b, t = video.shape[:2]
            assert tuple(video.shape[-2:]) == self.model_resolution
            self.queries.append(queries.clone())
            k = torch.arange(t, dtype=torch.float32).view(1, t, 1, 1)
            dt = k - queries[:, None, :, :1]
            tracks = helper(queries[:, None, :, 1:] + dt * self.step)
            vis = torch.where(k[..., 0] % 2 == 0, 0.95, 0.85).expand(tracks.shape[:3]).clone()
            return tracks, vis, torch.full_like(vis, 0.7), None
    """
)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def alltracker_clone(tmp_path: Path) -> tuple[Path, Path]:
    repo = tmp_path / "alltracker"
    _write(
        repo,
        {
            "nets/alltracker.py": ALLTRACKER_NET,
            "nets/blocks.py": "",
            "utils/basic.py": "",
            "utils/misc.py": "",
        },
    )
    weights = tmp_path / "alltracker.pth"
    torch.save({"model": {"step": torch.tensor([2.0, -1.0])}}, weights)
    return repo, weights


@pytest.fixture
def cotracker_clone(tmp_path: Path) -> tuple[Path, Path]:
    repo = tmp_path / "co-tracker"
    _write(
        repo,
        {
            "cotracker/__init__.py": "",
            "cotracker/models/__init__.py": "",
            "cotracker/models/core/__init__.py": "",
            "cotracker/models/core/model_utils.py": "def helper(x):\n    return x\n",
            "cotracker/models/core/cotracker/__init__.py": "",
            "cotracker/models/core/cotracker/cotracker3_online.py": "",
            "cotracker/models/core/cotracker/cotracker3_offline.py": COTRACKER_MODEL,
        },
    )
    weights = tmp_path / "scaled_offline.pth"
    torch.save({"step": torch.tensor([1.0, 0.5])}, weights)
    return repo, weights


def test_alltracker_missing_repo_is_named(tmp_path: Path) -> None:
    with pytest.raises(TrackerError, match=r"repo_path .*not a folder.*aharley/alltracker"):
        make_tracker("alltracker", repo_path=str(tmp_path / "nope"), weights_path="w.pth")


def test_alltracker_missing_files_are_listed(tmp_path: Path) -> None:
    _write(tmp_path / "repo", {"nets/alltracker.py": ""})
    with pytest.raises(TrackerError, match=r"lacks nets/blocks\.py, utils/basic\.py"):
        make_tracker("alltracker", repo_path=str(tmp_path / "repo"), weights_path="w.pth")
    assert "nets/alltracker.py" in ALLTRACKER_FILES


def test_alltracker_missing_weights_are_named(alltracker_clone: tuple[Path, Path]) -> None:
    repo, weights = alltracker_clone
    with pytest.raises(TrackerError, match=r"weights_path .*missing\.pth.*never downloads"):
        make_tracker(
            "alltracker", repo_path=str(repo), weights_path=str(weights.parent / "missing.pth")
        )


def test_cotracker_missing_repo_weights_and_files(
    tmp_path: Path, cotracker_clone: tuple[Path, Path]
) -> None:
    with pytest.raises(TrackerError, match="co-tracker"):
        make_tracker("cotracker3", repo_path=str(tmp_path / "none"), weights_path="w.pth")
    _write(tmp_path / "partial", {"cotracker/__init__.py": ""})
    with pytest.raises(
        TrackerError, match=r"lacks cotracker/models/core/cotracker/cotracker3_offline\.py"
    ):
        make_tracker("cotracker3", repo_path=str(tmp_path / "partial"), weights_path="w.pth")
    repo, _ = cotracker_clone
    with pytest.raises(TrackerError, match="weights_path"):
        make_tracker("cotracker3", repo_path=str(repo), weights_path=str(tmp_path / "w.pth"))
    assert len(COTRACKER_FILES) == 4


def test_pickled_objects_in_weights_are_refused(alltracker_clone: tuple[Path, Path]) -> None:
    repo, weights = alltracker_clone
    torch.save({"model": {"step": torch.zeros(2)}, "args": Path("x")}, weights)
    with pytest.raises(TrackerError, match="weights_only"):
        make_tracker("alltracker", repo_path=str(repo), weights_path=str(weights))


def _frames(t: int = 5, h: int = 80, w: int = 96) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(t, h, w, 3), dtype=np.uint8)


def test_tracker_errors_are_one_line_naming_tracker_and_fix(tmp_path: Path) -> None:
    with pytest.raises(TrackerError, match=r"unknown tracker 'nope'; choose one of"):
        make_tracker("nope")
    with pytest.raises(TrackerError, match=r"tracker flow: unknown option\(s\) \['speed'\]"):
        make_tracker("flow", speed=2)
    with pytest.raises(TrackerError, match=r"tracker cotracker3: needs repo_path, weights_path"):
        make_tracker("cotracker3")
    # A clone whose code imports what is not installed: the extra to install is named.
    repo = tmp_path / "alltracker"
    _write(
        repo, {**dict.fromkeys(ALLTRACKER_FILES, ""), "nets/alltracker.py": "import no_such_mod_x"}
    )
    weights = tmp_path / "w.pth"
    torch.save({"model": {}}, weights)
    with pytest.raises(TrackerError) as info:
        make_tracker("alltracker", repo_path=str(repo), weights_path=str(weights))
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, ValueError)
    assert f"repo_path={str(repo)!r}" in message and "trajloom-data[alltracker]" in message


def test_alltracker_never_downloads_and_runs_on_cpu(alltracker_clone: tuple[Path, Path]) -> None:
    """The stand-in downloads when built with init_weights=True and its get_fmaps calls .cuda()."""
    repo, weights = alltracker_clone
    path_before = list(sys.path)
    tracker = make_tracker(
        "alltracker", repo_path=str(repo), weights_path=str(weights), device="cpu", image_size=96
    )
    assert sys.path == path_before
    assert "utils.misc" not in sys.modules and "nets.alltracker" not in sys.modules
    frames = _frames()
    # Frame 1 (a 2-frame backward pass), frame 3 (a 2-frame forward pass), the last frame.
    queries = np.array([[0, 10.0, 20.0], [1, 12.0, 8.0], [2, 30.5, 12.25], [3, 5.0, 50.0]])
    queries = np.concatenate([queries, [[4, 40.0, 40.0]]])
    result = tracker.track(frames, queries)
    assert sys.path == path_before
    # Forward: +k * (2, -1) from the query frame; backward runs on the reversed clip.
    t = np.arange(5)[:, None, None]
    expected = queries[None, :, 1:] + np.abs(t - queries[None, :, :1]) * np.array([2.0, -1.0])
    np.testing.assert_allclose(result.tracks, expected, atol=1e-4)
    np.testing.assert_allclose(result.confidence[1:, 0], 0.9, atol=1e-6)
    assert result.visibility.all()  # 1 * 0.9 > 0.6


def test_alltracker_two_frame_clip(alltracker_clone: tuple[Path, Path]) -> None:
    repo, weights = alltracker_clone
    tracker = make_tracker(
        "alltracker", repo_path=str(repo), weights_path=str(weights), device="cpu", image_size=96
    )
    result = tracker.track(_frames(t=2), np.array([[0, 10.0, 20.0], [1, 30.0, 30.0]]))
    np.testing.assert_allclose(result.tracks[1, 0], [12.0, 19.0], atol=1e-4)
    np.testing.assert_allclose(result.tracks[0, 1], [32.0, 29.0], atol=1e-4)


def test_alltracker_resizes_as_the_demo(alltracker_clone: tuple[Path, Path]) -> None:
    """Longest side to image_size (upsampling too), sides down to multiples of 8,
    INTER_LINEAR, coordinates scaled plainly."""
    repo, weights = alltracker_clone
    tracker = make_tracker(
        "alltracker", repo_path=str(repo), weights_path=str(weights), device="cpu", image_size=256
    )
    frames = _frames(t=3, h=100, w=140)  # scale 256 / 140: 256 x 182.9 -> 256 x 176
    result = tracker.track(frames, np.array([[0, 35.0, 26.0]]))
    seen = tracker.model.seen[0][0].permute(0, 2, 3, 1).numpy()
    linear = np.stack([cv2.resize(f, (256, 176), interpolation=cv2.INTER_LINEAR) for f in frames])
    np.testing.assert_array_equal(seen, linear)
    np.testing.assert_allclose(result.tracks[0, 0], [35.0, 26.0], atol=1e-4)
    step = np.diff(result.tracks[:, 0], axis=0)
    np.testing.assert_allclose(
        step, np.tile([2.0 * 140 / 256, -1.0 * 100 / 176], (2, 1)), atol=1e-4
    )


def test_alltracker_size_floor(alltracker_clone: tuple[Path, Path]) -> None:
    """Upstream's pyramid fails on sides padded to 64: refused before it runs, naming the fix."""
    repo, weights = alltracker_clone
    with pytest.raises(TrackerError, match=r"image_size must be >= 72"):
        make_tracker("alltracker", repo_path=str(repo), weights_path=str(weights), image_size=64)
    tracker = make_tracker(
        "alltracker", repo_path=str(repo), weights_path=str(weights), device="cpu", image_size=96
    )
    with pytest.raises(TrackerError, match=r"96x64 .* under the 72 px.*raise image_size"):
        tracker.track(_frames(t=3, h=64, w=96), np.array([[0, 5.0, 5.0]]))
    result = tracker.track(_frames(t=3, h=72, w=96), np.array([[0, 5.0, 5.0]]))  # 72: runs
    assert result.tracks.shape == (3, 1, 2)


def test_cotracker_loads_from_clone_and_tracks(cotracker_clone: tuple[Path, Path]) -> None:
    repo, weights = cotracker_clone
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    tracker = make_tracker(
        "cotracker3", repo_path=str(repo), weights_path=str(weights), device="cpu"
    )
    # The stand-in calls torch.manual_seed(0) at import, as upstream does: undone.
    torch.testing.assert_close(torch.rand(3), expected_draw)
    assert "cotracker" not in sys.modules
    frames = _frames(t=6, h=97, w=129)  # the model runs at 96 x 128
    queries = np.array([[0, 10.0, 20.0], [3, 60.0, 50.0]])
    result = tracker.track(frames, queries)
    t = np.arange(6)[:, None, None]
    dt = t - queries[None, :, :1]
    # Forward in time: +dt * step; before the query the reversed pass also moves +|dt| * step;
    # model pixels map back by align-corners scaling, (W - 1) / (Wm - 1).
    step = np.array([1.0 * 128 / 127, 0.5 * 96 / 95])
    expected = queries[None, :, 1:] + np.abs(dt) * step
    np.testing.assert_allclose(result.tracks, expected, atol=1e-4)
    assert result.tracks.shape == (6, 2, 2)  # the support grid is dropped
    # Default rule "evaluation": vis * conf > 0.6 (0.95 * 0.7 on even frames of the forward
    # pass, 0.85 * 0.7 on odd ones); the query frames themselves are visible.
    odd = np.arange(6) % 2 == 1
    assert not result.visibility[odd, 0].any() and result.visibility[~odd, 0].all()
    # The support grid: upstream's get_points_on_a_grid(6, (96, 128)), margin 128 / 64.
    given = tracker.model.queries[0][0].numpy()
    grid = given[2:]
    assert grid.shape == (36, 3) and (grid[:, 0] == 0).all()
    np.testing.assert_allclose(grid[[0, 5, 30, 35], 1:], [[2, 2], [126, 2], [2, 94], [126, 94]])


def test_cotracker_visibility_rules_and_backward_option(
    cotracker_clone: tuple[Path, Path],
) -> None:
    repo, weights = cotracker_clone
    common = {"repo_path": str(repo), "weights_path": str(weights), "device": "cpu"}
    frames = _frames(t=6, h=96, w=128)
    queries = np.array([[2, 10.0, 20.0]])
    t = np.arange(6)
    predictor = make_tracker("cotracker3", visibility="predictor", **common).track(frames, queries)
    # vis > 0.9: even frames; the backward pass runs on the reversed clip (frame 5 - t).
    expected = np.where(t < 2, (5 - t) % 2 == 0, t % 2 == 0) | (t == 2)
    np.testing.assert_array_equal(predictor.visibility[:, 0], expected)
    forward_only = make_tracker("cotracker3", backward_tracking=False, **common)
    result = forward_only.track(frames, queries)
    assert len(forward_only.model.queries) == 1  # one pass
    # Before the query, the forward pass's output: +dt * step with dt < 0.
    dt = (t - 2)[:, None]
    np.testing.assert_allclose(result.tracks[:, 0], queries[:, 1:] + dt * [1.0, 0.5], atol=1e-4)
    with pytest.raises(
        TrackerError, match=r"visibility must be one of \['evaluation', 'predictor'\]"
    ):
        make_tracker("cotracker3", visibility="vis", **common)


def test_support_grid_matches_upstream_formula() -> None:
    """get_points_on_a_grid(6, (384, 512)): 8 px margin on both axes, row-major (x inner)."""
    grid = support_grid(6, (384, 512))
    np.testing.assert_allclose(grid[0], [8.0, 8.0])
    np.testing.assert_allclose(grid[5], [504.0, 8.0])
    np.testing.assert_allclose(grid[-1], [504.0, 376.0])
    np.testing.assert_allclose(np.diff(grid[:6, 0]), (512 - 16) / 5)
    np.testing.assert_allclose(support_grid(1, (384, 512)), [[256.0, 192.0]])
