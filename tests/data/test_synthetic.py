"""Synthetic scenes: exact tracks, visibility that agrees with the pixels, determinism, splits."""

import numpy as np
import pytest

from trajloom.data.synthetic import (
    CameraPath,
    SceneConfig,
    SyntheticClips,
    make_scene,
    scene_seed,
    synthetic_shard_samples,
)
from trajloom.encoding import query_points

SMALL = SceneConfig(width=128, height=96, stride=16, num_frames=24)


def _sample(frames_t: np.ndarray, pts: np.ndarray) -> np.ndarray:
    h, w = frames_t.shape[:2]
    ij = np.floor(pts + 0.5).astype(int)
    ij[:, 0] = np.clip(ij[:, 0], 0, w - 1)
    ij[:, 1] = np.clip(ij[:, 1], 0, h - 1)
    return frames_t[ij[:, 1], ij[:, 0]].astype(np.float64)


def test_deterministic_per_seed():
    a, b, c = make_scene(5, SMALL), make_scene(5, SMALL), make_scene(6, SMALL)
    np.testing.assert_array_equal(a.tracks, b.tracks)
    np.testing.assert_array_equal(a.visibility, b.visibility)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert a.caption == b.caption and a.meta == b.meta
    assert not np.array_equal(a.tracks, c.tracks)


def test_shapes_and_seeding_on_the_grid():
    scene = make_scene(1, SMALL)
    n = SMALL.spec.num_points
    assert scene.tracks.shape == (24, n, 2) and scene.tracks.dtype == np.float32
    assert scene.visibility.shape == (24, n) and scene.visibility.dtype == np.bool_
    assert scene.frames.shape == (24, 96, 128, 3) and scene.frames.dtype == np.uint8
    np.testing.assert_allclose(scene.tracks[0], query_points(SMALL.spec).numpy(), atol=1e-4)
    assert scene.visibility[0].all()  # every seed sits on its own top-most surface
    assert scene.camera_phrase in scene.caption
    assert make_scene(1, SceneConfig(**{**SMALL.to_dict(), "render_frames": False})).frames is None


def test_pure_pan_is_an_exact_translation():
    cfg = SceneConfig(width=128, height=96, stride=16, num_frames=20, min_objects=0, max_objects=0)
    scene = make_scene(0, cfg, camera=CameraPath(pan=0.01))
    t = np.arange(20, dtype=np.float64)[:, None]
    expected_x = scene.tracks[0, :, 0][None] - 0.01 * 128 * t
    np.testing.assert_allclose(scene.tracks[..., 0], expected_x, atol=1e-3)
    np.testing.assert_allclose(
        scene.tracks[..., 1], np.broadcast_to(scene.tracks[0, :, 1], (20, 48)), atol=1e-3
    )
    inside = (expected_x >= 0) & (expected_x < 128)
    np.testing.assert_array_equal(scene.visibility, inside)
    assert scene.camera_phrase == "the camera pans right"


def test_tracks_follow_the_rendered_pixels():
    # colours at visible track positions stay those of frame 0; a shuffled pairing does not
    errors, shuffled = [], []
    for seed in range(4):
        scene = make_scene(seed, SMALL)
        for t in range(1, SMALL.num_frames):
            keep = scene.visibility[t]
            a = _sample(scene.frames[0], scene.tracks[0][keep])
            b = _sample(scene.frames[t], scene.tracks[t][keep])
            errors.append(np.abs(a - b).mean())
            shuffled.append(np.abs(a - np.roll(b, 5, axis=0)).mean())
    assert np.mean(errors) < 4.0
    assert np.mean(shuffled) > 8 * np.mean(errors)


def test_occluded_points_show_another_surface():
    # inside the image, invisible points are hidden by a nearer object: their pixel no
    # longer shows their own colour, unlike visible points
    cfg = SceneConfig(
        width=128,
        height=96,
        stride=8,
        num_frames=24,
        min_objects=3,
        max_objects=4,
        p_static_camera=1.0,
    )
    hidden_err, shown_err = [], []
    for seed in range(6):
        scene = make_scene(seed, cfg)
        inside = (
            (scene.tracks[..., 0] >= 0)
            & (scene.tracks[..., 0] < 128)
            & (scene.tracks[..., 1] >= 0)
            & (scene.tracks[..., 1] < 96)
        )
        for t in range(1, cfg.num_frames):
            for sel, out in (
                (inside[t] & ~scene.visibility[t], hidden_err),
                (scene.visibility[t], shown_err),
            ):
                if sel.sum() >= 3:
                    a = _sample(scene.frames[0], scene.tracks[0][sel])
                    b = _sample(scene.frames[t], scene.tracks[t][sel])
                    out.append(np.abs(a - b).mean())
        assert not (scene.visibility & ~inside).any()  # outside the image is never visible
    assert hidden_err, "no occlusion happened in these scenes"
    assert np.mean(hidden_err) > 5 * np.mean(shown_err)


def test_points_leave_the_frame_under_a_fast_pan():
    cfg = SceneConfig(width=128, height=96, stride=16, num_frames=24, min_objects=0, max_objects=0)
    scene = make_scene(0, cfg, camera=CameraPath(pan=-0.03))
    assert scene.visibility[-1].sum() < scene.visibility[0].sum()
    assert (scene.tracks[-1, ~scene.visibility[-1], 0] >= 128).all()


def test_config_validation():
    with pytest.raises(ValueError, match="multiples of stride"):
        SceneConfig(width=100, height=96, stride=16)
    with pytest.raises(ValueError, match="probability"):
        SceneConfig(p_pan=1.5)
    assert SceneConfig.from_dict(SMALL.to_dict()) == SMALL


def test_synthetic_clips_split_exactly_once_over_ranks_and_workers(monkeypatch):
    import trajloom.data.stream as stream

    seen = []
    ranks, workers = 2, 3
    for rank in range(ranks):
        for worker in range(workers):
            monkeypatch.setattr(
                stream,
                "get_worker_info",
                lambda w=worker: type("Info", (), {"id": w, "num_workers": workers})(),
            )
            ds = SyntheticClips(
                SceneConfig(width=64, height=64, stride=16, num_frames=8, render_frames=False),
                history=4,
                future=4,
                count=13,
                seed=3,
                rank=rank,
                world_size=ranks,
            )
            seen.extend(s.id for s in ds)
    assert sorted(seen) == sorted(f"synthetic-3-0-{i}" for i in range(13))


def test_synthetic_clips_sample_dict():
    ds = SyntheticClips(SMALL, history=8, future=12, count=2, seed=0)
    samples = list(ds)
    s = samples[0]
    assert s.hist_tracks.shape == (8, 48, 2) and s.fut_tracks.shape == (12, 48, 2)
    assert s.hist_vis.dtype == bool and s.frames.shape == (8, 96, 128, 3)
    scene = make_scene(scene_seed(0, 0), SMALL)
    np.testing.assert_array_equal(s.fut_tracks, scene.tracks[8:20])
    assert s.caption == scene.caption
    with pytest.raises(ValueError, match="num_frames"):
        SyntheticClips(SMALL, history=20, future=20)


def test_synthetic_shards_round_trip(tmp_path):
    from trajloom.data.shards import write_shards
    from trajloom.data.stream import ShardStream, StreamConfig

    cfg = SceneConfig(width=64, height=64, stride=16, num_frames=8)
    manifest = write_shards(synthetic_shard_samples(3, cfg, seed=2, crf=5), tmp_path, maxcount=2)
    assert manifest["num_samples"] == 3 and manifest["members"]["video.mp4"] == 3
    config = StreamConfig(
        urls=(str(tmp_path),),
        history=4,
        future=4,
        width=64,
        height=64,
        stride=16,
        decode_frames=True,
        shuffle_shards=False,
    )
    out = list(ShardStream(config))
    scene = make_scene(scene_seed(2, 0), cfg)
    np.testing.assert_array_equal(out[0].fut_tracks, scene.tracks[4:8])
    assert np.abs(out[0].frames.astype(int) - scene.frames[:4]).mean() < 4.0


@pytest.mark.parametrize(
    "cfg",
    [
        SceneConfig(width=96, height=32, stride=8, num_frames=2, min_objects=0, max_objects=0),
        SceneConfig(width=64, height=128, stride=32, num_frames=40, min_objects=4, max_objects=4),
        SceneConfig(width=48, height=48, stride=16, num_frames=5, object_size=(0.9, 1.0)),
    ],
    ids=["wide-2-frames-empty", "tall-crowded", "huge-objects"],
)
def test_invariants_at_odd_sizes(cfg):
    for seed in range(3):
        scene = make_scene(seed, cfg)
        assert np.isfinite(scene.tracks).all()
        assert scene.visibility[0].all()
        assert scene.frames.shape == (cfg.num_frames, cfg.height, cfg.width, 3)
        assert scene.owner.min() >= -1 and scene.owner.max() < cfg.max_objects
        assert scene.caption.endswith(".")


def test_synthetic_clips_through_a_two_worker_dataloader():
    from trajloom.data.stream import make_loader

    ds = SyntheticClips(
        SceneConfig(width=64, height=64, stride=16, num_frames=8, render_frames=False),
        history=4,
        future=4,
        count=10,
        seed=1,
    )
    ids = [i for batch in make_loader(ds, batch_size=3, num_workers=2) for i in batch.ids]
    assert sorted(ids) == sorted(f"synthetic-1-0-{i}" for i in range(10))


def test_camera_motion_can_start_late():
    from trajloom.data.synthetic import CameraPath

    cfg = SceneConfig(width=128, height=64, stride=16, num_frames=16, min_objects=0, max_objects=0)
    scene = make_scene(3, cfg, camera=CameraPath(pan=0.02, start=8))
    still, moving = scene.tracks[:9], scene.tracks[8:]
    np.testing.assert_array_equal(still, np.broadcast_to(scene.tracks[:1], still.shape))
    # the camera pans right from frame 8 on: content moves left by 0.02 widths per frame
    steps = np.diff(moving[..., 0], axis=0)
    np.testing.assert_allclose(steps, -0.02 * 128, atol=1e-4)
    assert "pans right" in scene.caption
