"""Synthetic scenes: exact tracks, visibility that agrees with the pixels, determinism, splits."""

from dataclasses import replace

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


@pytest.mark.parametrize(
    "cfg",
    [
        SMALL,
        SceneConfig.preset("lively", width=128, height=96, stride=16, num_frames=24),
        SceneConfig.preset("calibrated", width=128, height=96, stride=16, num_frames=24),
    ],
    ids=["rigid", "lively", "calibrated"],
)
def test_tracks_follow_the_rendered_pixels(cfg):
    # colours at visible track positions stay those of frame 0; a shuffled pairing does not
    errors, shuffled = [], []
    for seed in range(4):
        scene = make_scene(seed, cfg)
        for t in range(1, cfg.num_frames):
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


# ----------------------------------------------------------------- nonlinear dynamics

# One object moving only by the dynamics under test: no camera, no drift, no rotation.
BARE = dict(
    width=128,
    height=128,
    stride=16,
    num_frames=34,
    min_objects=1,
    max_objects=1,
    object_size=(0.3, 0.3),
    p_static_camera=1.0,
    p_still=1.0,
    p_rotate=0.0,
    p_scale=0.0,
    p_bounce=0.0,
    render_frames=False,
)


def _object_path(scene) -> np.ndarray:
    """The path "t 2" of the (single) object's first grid point."""
    points = np.flatnonzero(scene.owner == 0)
    assert points.size, "the object covers no grid point"
    return scene.tracks[:, points[0]].astype(np.float64)


def test_falling_object_accelerates_by_gravity_and_bounces_on_the_floor():
    cfg = SceneConfig(**BARE, p_fall=1.0, gravity=0.002)
    bounces = 0
    for seed in range(6):
        scene = make_scene(seed, cfg)
        path = _object_path(scene)
        np.testing.assert_allclose(path[:, 0], path[0, 0], atol=1e-3)  # no sideways motion
        vy = np.diff(path[:, 1])
        accel = np.diff(vy)
        free = np.isclose(accel, 0.002 * 128, atol=1e-3)
        # between bounces the velocity grows by g per frame; a bounce turns it upwards
        assert free.mean() > 0.6
        assert (accel[~free] < 0.002 * 128 - 1e-3).all()
        if not free.all():
            assert (vy[np.argmin(free) :] < 0).any()
        bounces += int((~free).sum())
        assert "falls and bounces" in scene.caption
    assert bounces > 0


def test_swinging_objects_stay_near_their_start_and_move_nonlinearly():
    cfg = SceneConfig(**BARE, p_swing=1.0, swing_amplitude=(0.05, 0.05), swing_period=(8, 8))
    for seed in range(6):
        path = _object_path(make_scene(seed, cfg))
        reach = np.linalg.norm(path - path[0], axis=-1).max()
        assert 0.05 * 128 < reach <= 2 * np.sqrt(2) * 0.05 * 128 + 1e-3
        # period 8: the path repeats every 8 frames
        np.testing.assert_allclose(path[8:], path[:-8], atol=1e-3)


def test_a_turn_rotates_the_velocity_once_and_keeps_the_speed():
    cfg = SceneConfig(**{**BARE, "p_still": 0.0}, p_turn=1.0, p_accelerate=0.0, p_stop_start=0.0)
    for seed in range(6):
        vel = np.diff(_object_path(make_scene(seed, cfg)), axis=0)
        changes = np.flatnonzero(np.linalg.norm(np.diff(vel, axis=0), axis=-1) > 1e-3)
        assert changes.size == 1
        before, after = vel[0], vel[-1]
        np.testing.assert_allclose(np.linalg.norm(after), np.linalg.norm(before), rtol=1e-4)
        angle = np.degrees(np.arccos(before @ after / np.linalg.norm(before) ** 2))
        assert 45 - 1e-3 <= angle <= 120 + 1e-3


def test_dynamics_leave_frame_zero_camera_and_ownership_of_the_rigid_scene():
    rigid = SceneConfig(width=128, height=96, stride=16, num_frames=24, render_frames=False)
    lively = SceneConfig(**{**rigid.to_dict(), "p_swing": 1.0, "p_turn": 1.0, "p_fall": 1.0})
    for seed in range(4):
        a, b = make_scene(seed, rigid), make_scene(seed, lively)
        np.testing.assert_array_equal(a.owner, b.owner)
        np.testing.assert_array_equal(a.tracks[0], b.tracks[0])
        background = a.owner < 0
        np.testing.assert_array_equal(a.tracks[:, background], b.tracks[:, background])
        assert a.camera == b.camera
        if (~background).any():
            assert not np.allclose(a.tracks[:, ~background], b.tracks[:, ~background])


def _cv_error(cfg: SceneConfig, history: int) -> float:
    errors = []
    for seed in range(24):
        tracks = make_scene(seed, cfg).tracks.astype(np.float64)
        steps = np.arange(1, cfg.num_frames - history + 1)[:, None, None]
        cv = tracks[history - 1] + steps * (tracks[history - 1] - tracks[history - 2])
        errors.append(np.linalg.norm(cv - tracks[history:], axis=-1).mean())
    return float(np.mean(errors))


def test_constant_velocity_is_far_worse_in_the_lively_world():
    shape = dict(width=128, height=128, stride=16, num_frames=34, render_frames=False)
    rigid = _cv_error(SceneConfig.preset("rigid", **shape), 17)
    lively = _cv_error(SceneConfig.preset("lively", **shape), 17)
    assert lively > 2 * rigid


def test_presets_and_dynamics_validation():
    assert SceneConfig.preset("rigid") == SceneConfig()
    lively = SceneConfig.preset("lively", width=64, height=64)
    assert lively.p_swing > 0 and lively.p_fall > 0 and (lively.width, lively.height) == (64, 64)
    assert SceneConfig.from_dict(lively.to_dict()) == lively
    with pytest.raises(ValueError, match="unknown scene dynamics 'wobbly'"):
        SceneConfig.preset("wobbly")
    with pytest.raises(ValueError, match="swing_period"):
        SceneConfig(swing_period=(1.0, 4.0))
    with pytest.raises(ValueError, match="swing_amplitude"):
        SceneConfig(swing_amplitude=(0.2, 0.1))
    with pytest.raises(ValueError, match="shake_amplitude"):
        SceneConfig(shake_amplitude=(0.0, 0.1))


def test_calibrated_world_round_trips_and_moves_its_camera_more_gently():
    calibrated = SceneConfig.preset("calibrated", width=128, height=128, num_frames=34)
    assert SceneConfig.from_dict(calibrated.to_dict()) == calibrated
    lively = SceneConfig.preset("lively", width=128, height=128, num_frames=34)

    def pans(cfg: SceneConfig) -> float:
        paths = [make_scene(seed, replace(cfg, render_frames=False)) for seed in range(40)]
        return float(np.median([abs(s.meta["camera_path"]["pan"]) for s in paths]))

    assert pans(calibrated) < pans(lively)
    with pytest.raises(ValueError, match="gravity"):
        SceneConfig(gravity=-1.0)
    with pytest.raises(ValueError, match="probability"):
        SceneConfig(p_fall=2.0)


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
