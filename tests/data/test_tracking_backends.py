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

import numpy as np
import pytest
import torch

from trajloom.data.tracking import make_tracker
from trajloom.data.tracking.alltracker import ALLTRACKER_FILES
from trajloom.data.tracking.cotracker import COTRACKER_FILES

# AllTracker's Net: dense displacement from the first frame, here a constant (dx, dy)
# per frame index, with visibility 1 and confidence 0.9.
ALLTRACKER_NET = textwrap.dedent(
    """
    import torch
    import utils.misc  # the real module imports its siblings by top-level name

    class Net(torch.nn.Module):
        def __init__(self, seqlen, use_basicencoder=False, no_split=False):
            super().__init__()
            self.seqlen = seqlen
            self.step = torch.nn.Parameter(torch.zeros(2))

        def forward_sliding(self, rgbs, iters=4, sw=None, is_training=False):
            b, t, c, h, w = rgbs.shape
            k = torch.arange(t, dtype=torch.float32).view(1, t, 1, 1, 1)
            flows = k * self.step.view(1, 1, 2, 1, 1) * torch.ones(b, t, 2, h, w)
            visconf = torch.ones(b, t, 2, h, w)
            visconf[:, :, 1] = 0.9
            return flows, visconf, None, None
    """
)

# CoTracker3 offline: tracks move by a constant step per frame from the query frame.
COTRACKER_MODEL = textwrap.dedent(
    """
    import torch
    from cotracker.models.core.model_utils import helper

    class CoTrackerThreeOffline(torch.nn.Module):
        def __init__(self, stride=4, corr_radius=3, window_len=60):
            super().__init__()
            self.model_resolution = (96, 128)
            self.step = torch.nn.Parameter(torch.zeros(2))

        def forward(self, video, queries, iters=4):
            b, t = video.shape[:2]
            assert tuple(video.shape[-2:]) == self.model_resolution
            k = torch.arange(t, dtype=torch.float32).view(1, t, 1, 1)
            dt = k - queries[:, None, :, :1]
            tracks = helper(queries[:, None, :, 1:] + dt * self.step)
            vis = torch.ones(tracks.shape[:3])
            return tracks, vis, vis * 0.95, None
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
    with pytest.raises(FileNotFoundError, match=r"repo_path .*not a folder.*aharley/alltracker"):
        make_tracker("alltracker", repo_path=str(tmp_path / "nope"), weights_path="w.pth")


def test_alltracker_missing_files_are_listed(tmp_path: Path) -> None:
    _write(tmp_path / "repo", {"nets/alltracker.py": ""})
    with pytest.raises(FileNotFoundError, match=r"lacks nets/blocks\.py, utils/basic\.py"):
        make_tracker("alltracker", repo_path=str(tmp_path / "repo"), weights_path="w.pth")
    assert "nets/alltracker.py" in ALLTRACKER_FILES


def test_alltracker_missing_weights_are_named(alltracker_clone: tuple[Path, Path]) -> None:
    repo, weights = alltracker_clone
    with pytest.raises(FileNotFoundError, match=r"weights_path .*missing\.pth.*never downloads"):
        make_tracker(
            "alltracker", repo_path=str(repo), weights_path=str(weights.parent / "missing.pth")
        )


def test_cotracker_missing_repo_weights_and_files(
    tmp_path: Path, cotracker_clone: tuple[Path, Path]
) -> None:
    with pytest.raises(FileNotFoundError, match="co-tracker"):
        make_tracker("cotracker3", repo_path=str(tmp_path / "none"), weights_path="w.pth")
    _write(tmp_path / "partial", {"cotracker/__init__.py": ""})
    with pytest.raises(
        FileNotFoundError, match=r"lacks cotracker/models/core/cotracker/cotracker3_offline\.py"
    ):
        make_tracker("cotracker3", repo_path=str(tmp_path / "partial"), weights_path="w.pth")
    repo, _ = cotracker_clone
    with pytest.raises(FileNotFoundError, match="weights_path"):
        make_tracker("cotracker3", repo_path=str(repo), weights_path=str(tmp_path / "w.pth"))
    assert len(COTRACKER_FILES) == 4


def test_pickled_objects_in_weights_are_refused(alltracker_clone: tuple[Path, Path]) -> None:
    repo, weights = alltracker_clone
    torch.save({"model": {"step": torch.zeros(2)}, "args": Path("x")}, weights)
    with pytest.raises(ValueError, match="weights_only"):
        make_tracker("alltracker", repo_path=str(repo), weights_path=str(weights))


def _frames(t: int = 5, h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(t, h, w, 3), dtype=np.uint8)


def test_alltracker_loads_from_clone_and_tracks(alltracker_clone: tuple[Path, Path]) -> None:
    repo, weights = alltracker_clone
    path_before = list(sys.path)
    tracker = make_tracker(
        "alltracker", repo_path=str(repo), weights_path=str(weights), device="cpu"
    )
    assert sys.path == path_before
    assert "utils.misc" not in sys.modules and "nets.alltracker" not in sys.modules
    frames = _frames()
    queries = np.array([[0, 10.0, 20.0], [2, 30.5, 12.25], [4, 40.0, 40.0]])
    result = tracker.track(frames, queries)
    assert sys.path == path_before
    # Forward: +k * (2, -1) from the query frame; backward runs on the reversed clip.
    t = np.arange(5)[:, None, None]
    expected = queries[None, :, 1:] + np.abs(t - queries[None, :, :1]) * np.array([2.0, -1.0])
    np.testing.assert_allclose(result.tracks, expected, atol=1e-4)
    np.testing.assert_allclose(result.confidence[t[:, 0, 0] != 0, 0], 0.9, atol=1e-6)
    assert result.visibility.all()  # 1 * 0.9 > 0.6


def test_alltracker_resizes_to_multiples_of_8(alltracker_clone: tuple[Path, Path]) -> None:
    repo, weights = alltracker_clone
    tracker = make_tracker(
        "alltracker", repo_path=str(repo), weights_path=str(weights), device="cpu"
    )
    frames = _frames(t=3, h=52, w=70)  # model runs at 64 x 48
    result = tracker.track(frames, np.array([[0, 35.0, 26.0]]))
    step = np.diff(result.tracks[:, 0], axis=0)
    np.testing.assert_allclose(step, np.tile([2.0 * 70 / 64, -1.0 * 52 / 48], (2, 1)), atol=1e-4)


def test_cotracker_loads_from_clone_and_tracks(cotracker_clone: tuple[Path, Path]) -> None:
    repo, weights = cotracker_clone
    tracker = make_tracker(
        "cotracker3", repo_path=str(repo), weights_path=str(weights), device="cpu"
    )
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
    assert result.visibility.all()
    assert result.tracks.shape == (6, 2, 2)  # the support grid is dropped
