"""The learned trackers against their authors' own code, on random weights.

Run with a clone of each repository (nothing is downloaded; weights with random
values are made here, saved in the repository's own checkpoint format):

    TRAJLOOM_COTRACKER_REPO=/path/to/co-tracker TRAJLOOM_ALLTRACKER_REPO=/path/to/alltracker \\
        uv run pytest tests/data/test_tracking_upstream.py

CoTracker3 is compared with ``cotracker.predictor.CoTrackerPredictor``; AllTracker
with the computation of the repository's ``demo.py`` (``forward_video``: the demo's
resize, ``forward_sliding`` forward from the query frame and backward over the
reversed clip), whose ``.cuda()`` calls are made no-ops here on a machine without CUDA.
Each test skips when its variable is unset. Checked at co-tracker 82e02e8 and
alltracker c1ed462 (BENCHMARKS.md, Tracking).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from trajloom.data.tracking import make_tracker
from trajloom.data.tracking._clone import clone_imports

COTRACKER_REPO = os.environ.get("TRAJLOOM_COTRACKER_REPO")
ALLTRACKER_REPO = os.environ.get("TRAJLOOM_ALLTRACKER_REPO")
TOL = 1e-4  # px


def _video(t: int, h: int, w: int) -> np.ndarray:
    """Smooth random texture drifting right and down by 1.5 px a frame, ``"t h w 3"`` uint8."""
    rng = np.random.default_rng(1)
    base = cv2.GaussianBlur(rng.uniform(0, 255, (h + 64, w + 64, 3)).astype(np.float32), (0, 0), 3)
    frames = []
    for k in range(t):
        shift = np.float32([[1, 0, -32 + 1.5 * k], [0, 1, -32 + 1.5 * k]])
        frames.append(cv2.warpAffine(base, shift, (w, h), flags=cv2.INTER_LINEAR))
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


@pytest.mark.skipif(not COTRACKER_REPO, reason="set TRAJLOOM_COTRACKER_REPO to a co-tracker clone")
def test_cotracker3_equals_upstream_predictor(tmp_path: Path) -> None:
    repo = Path(str(COTRACKER_REPO))
    with clone_imports(repo):
        from cotracker.models.core.cotracker.cotracker3_offline import CoTrackerThreeOffline
        from cotracker.predictor import CoTrackerPredictor

        torch.manual_seed(0)
        model = CoTrackerThreeOffline(stride=4, corr_radius=3, window_len=60)
        weights = tmp_path / "scaled_offline.pth"
        torch.save(model.state_dict(), weights)  # the released file's format: a plain state dict
        reference = CoTrackerPredictor(checkpoint=str(weights), window_len=60).eval()
    frames = _video(8, 120, 160)
    queries = np.array([[0, 20.0, 30.0], [3, 80.5, 60.25], [7, 150.0, 100.0], [5, 0.0, 119.0]])
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float()[None]
    with torch.no_grad(), clone_imports(repo):
        up_tracks, up_vis = reference(
            video, queries=torch.from_numpy(queries).float()[None], backward_tracking=True
        )
    common = {"repo_path": str(repo), "weights_path": str(weights), "device": "cpu"}
    ours = make_tracker("cotracker3", visibility="predictor", **common).track(frames, queries)
    np.testing.assert_allclose(ours.tracks, up_tracks[0].numpy(), atol=TOL, rtol=0)
    np.testing.assert_array_equal(ours.visibility, up_vis[0].numpy())
    # Without backward tracking (upstream's default), frames before a query differ.
    with torch.no_grad(), clone_imports(repo):
        fwd_tracks, _ = reference(video, queries=torch.from_numpy(queries).float()[None])
    forward = make_tracker("cotracker3", backward_tracking=False, **common).track(frames, queries)
    np.testing.assert_allclose(forward.tracks, fwd_tracks[0].numpy(), atol=TOL, rtol=0)


def _demo_maps(model, rgbs: torch.Tensor, query_frame: int, iters: int):
    """demo.py's forward_video: trajectory maps ``"t 2 h w"`` and visconf ``"t 2 h w"``."""
    _, t, _, h, w = rgbs.shape
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    grid_xy = torch.stack([xs, ys]).float()[None, None]  # utils.basic.gridcloud2d, norm=False
    if t - query_frame == 1:  # nothing after the query frame
        flows, visconf = torch.zeros(1, 1, 2, h, w), torch.ones(1, 1, 2, h, w)
    elif t - query_frame == 2:  # the demo would crash here; forward_sliding gives frame 1 alone
        flows, visconf, *_ = model.forward_sliding(rgbs[:, query_frame:], iters=iters)
        flows = torch.stack([torch.zeros_like(flows), flows], 1)
        visconf = torch.stack([torch.ones_like(visconf), visconf], 1)
    else:
        flows, visconf, *_ = model.forward_sliding(rgbs[:, query_frame:], iters=iters)
    traj = flows + grid_xy
    if query_frame > 0:
        b_flows, b_visconf, *_ = model.forward_sliding(
            rgbs[:, : query_frame + 1].flip([1]), iters=iters
        )
        if query_frame == 1:
            b_flows = torch.stack([torch.zeros_like(b_flows), b_flows], 1)
            b_visconf = torch.stack([torch.ones_like(b_visconf), b_visconf], 1)
        traj = torch.cat([(b_flows + grid_xy).flip([1])[:, :-1], traj], dim=1)
        visconf = torch.cat([b_visconf.flip([1])[:, :-1], visconf], dim=1)
    return traj[0], visconf[0]


@pytest.mark.skipif(
    not ALLTRACKER_REPO, reason="set TRAJLOOM_ALLTRACKER_REPO to an alltracker clone"
)
@pytest.mark.parametrize("tiny", [True, False])
def test_alltracker_equals_upstream_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny: bool
) -> None:
    repo = Path(str(ALLTRACKER_REPO))
    if not torch.cuda.is_available():  # the demo's .cuda() calls, on a machine without CUDA
        monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    options = {"use_basicencoder": True, "no_split": True} if tiny else {}
    with clone_imports(repo):
        from nets.alltracker import Net

        torch.manual_seed(0)
        model = Net(8, init_weights=False, **options).eval()  # a short window: quick on CPU
        weights = tmp_path / "alltracker.pth"
        torch.save({"model": model.state_dict()}, weights)  # the released file's format
    t_count, h, w, image_size = 5, 90, 120, 96
    frames = _video(t_count, h, w)
    # The demo's resize: longest side to image_size, multiples of 8, INTER_LINEAR.
    scale = min(image_size / h, image_size / w)
    hm, wm = int(h * scale) // 8 * 8, int(w * scale) // 8 * 8
    resized = [cv2.resize(f, dsize=(wm, hm), interpolation=cv2.INTER_LINEAR) for f in frames]
    rgbs = torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).float()[None]
    # Queries on whole pixels of the resized frames, where the demo reads its maps; frame 1
    # and frame T-2 need 2-frame passes.
    model_xy = np.array([[10, 20], [47, 33], [95, 0], [3, 71]])
    query_t = np.array([0, 1, 3, 4])
    queries = np.concatenate([query_t[:, None], model_xy * [w / wm, h / hm]], axis=1)
    tracker = make_tracker(
        "alltracker",
        repo_path=str(repo),
        weights_path=str(weights),
        tiny=tiny,
        window_len=8,
        image_size=image_size,
        device="cpu",
    )
    ours = tracker.track(frames, queries)
    with torch.no_grad(), clone_imports(repo):
        for i, (qt, (x, y)) in enumerate(zip(query_t, model_xy, strict=True)):
            traj, visconf = _demo_maps(model, rgbs, int(qt), iters=4)
            expected = traj[:, :, y, x].numpy() * [w / wm, h / hm]
            expected[qt] = queries[i, 1:]
            np.testing.assert_allclose(ours.tracks[:, i], expected, atol=TOL, rtol=0)
            score = (visconf[:, 0, y, x] * visconf[:, 1, y, x]).numpy()
            score[qt] = 1.0
            np.testing.assert_allclose(ours.confidence[:, i], score, atol=1e-5)
