"""Camera motion from tracks: analytic cases and synthetic scenes whose camera is known."""

import numpy as np
import pytest

from trajloom.data.camera import (
    CameraMotion,
    CameraVocab,
    camera_phrase,
    estimate_camera_motion,
    shake_from_steps,
)
from trajloom.data.synthetic import CameraPath, SceneConfig, make_scene


def _grid(w=256, h=192, step=16):
    ys, xs = np.mgrid[0:h:step, 0:w:step]
    return np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float64)


def test_pure_translation_is_recovered_exactly():
    pts = _grid()
    t = np.arange(10)[:, None, None]
    tracks = pts[None] + t * np.array([-2.56, 1.92])
    vis = np.ones(tracks.shape[:2], bool)
    m = estimate_camera_motion(tracks, vis, (256, 192))
    assert m.pan == pytest.approx(0.01) and m.tilt == pytest.approx(0.01)
    assert m.zoom == pytest.approx(0.0, abs=1e-12) and m.roll == pytest.approx(0.0, abs=1e-12)
    assert m.shake == pytest.approx(0.0, abs=1e-12)


def test_zoom_and_roll_about_the_centre():
    pts, centre = _grid(), np.array([128.0, 96.0])
    frames = []
    for t in range(8):
        s, a = np.exp(0.01 * t), 0.02 * t
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) * s
        frames.append(centre + (pts - centre) @ rot.T)
    tracks = np.stack(frames)
    m = estimate_camera_motion(tracks, np.ones(tracks.shape[:2], bool), (256, 192))
    assert m.zoom == pytest.approx(0.01, abs=1e-9) and m.roll == pytest.approx(0.02, abs=1e-9)
    assert abs(m.pan) < 1e-9 and abs(m.tilt) < 1e-9


def test_independent_movers_and_invisible_points_do_not_pull_the_fit():
    pts = _grid()
    t = np.arange(12)[:, None, None]
    tracks = pts[None] + t * np.array([3.0, 0.0])
    movers = np.arange(len(pts)) % 4 == 0  # a quarter of the points move on their own
    tracks[:, movers] += t * np.array([-9.0, 5.0])
    vis = np.ones(tracks.shape[:2], bool)
    vis[5:, ::7] = False
    tracks[~vis] = 1e6  # garbage where invisible must be ignored
    m = estimate_camera_motion(tracks, vis, (256, 192))
    assert m.pan == pytest.approx(-3.0 / 256, rel=1e-3)
    assert abs(m.tilt) < 1e-4


def test_phrase_vocabulary():
    assert camera_phrase(CameraMotion()) == "static camera"
    assert camera_phrase(CameraMotion(pan=-0.003)) == "the camera pans left slowly"
    assert camera_phrase(CameraMotion(pan=0.01)) == "the camera pans right"
    assert camera_phrase(CameraMotion(tilt=0.05)) == "the camera tilts up quickly"
    assert (
        camera_phrase(CameraMotion(zoom=-0.004, roll=0.02))
        == "the camera zooms out slowly and rolls quickly"
    )
    assert camera_phrase(CameraMotion(shake=0.01)) == "handheld camera"
    assert camera_phrase(CameraMotion(pan=0.01, tilt=-0.01, shake=0.01)) == (
        "the handheld camera pans right and tilts down"
    )
    with pytest.raises(ValueError, match="move_min"):
        CameraVocab(move_min=0.1, move_slow=0.01)


def test_shake_of_a_constant_step_is_zero():
    assert shake_from_steps(np.tile([[1.0, -2.0]], (20, 1))) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(0)
    assert shake_from_steps(rng.normal(size=(40, 2))) > 0.5


CASES = [
    (CameraPath(), "static camera"),
    (CameraPath(pan=0.012), "the camera pans right"),
    (CameraPath(pan=-0.004), "the camera pans left slowly"),
    (CameraPath(tilt=0.01), "the camera tilts up"),
    (CameraPath(tilt=-0.025), "the camera tilts down quickly"),
    (CameraPath(zoom=0.008), "the camera zooms in"),
    (CameraPath(zoom=-0.008), "the camera zooms out"),
    (CameraPath(roll=0.01), "the camera rolls"),
    (CameraPath(shake=0.01), "handheld camera"),
    (CameraPath(pan=0.01, zoom=0.008), "the camera pans right and zooms in"),
]


@pytest.mark.parametrize(("path", "phrase"), CASES, ids=[c[1] for c in CASES])
def test_estimated_phrase_matches_the_known_camera(path, phrase):
    cfg = SceneConfig(width=256, height=192, stride=16, num_frames=32, render_frames=False)
    for seed in range(3):
        scene = make_scene(seed, cfg, camera=path)
        assert scene.camera_phrase == phrase
        estimate = estimate_camera_motion(scene.tracks, scene.visibility, (256, 192))
        assert camera_phrase(estimate) == phrase, (seed, estimate)
