"""Static and constant-velocity baselines."""

import pytest
import torch

from trajloom.encoding import GridSpec
from trajloom.flow.baselines import clip_to_image, constant_velocity_future, static_future

SPEC = GridSpec(width=128, height=64, stride=32)  # 2 x 4 grid, N = 8


def _linear_tracks(b=2, t=9, n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    start = torch.rand(b, 1, n, 2, generator=g) * 30 + 20
    vel = torch.randn(b, 1, n, 2, generator=g)
    steps = torch.arange(t, dtype=torch.float32).view(1, t, 1, 1)
    return start + steps * vel, vel


def test_constant_velocity_is_exact_on_linear_motion():
    tracks, vel = _linear_tracks()
    out = constant_velocity_future(tracks, None, 5, window=3, num_samples=2)
    steps = torch.arange(9, 14, dtype=torch.float32).view(1, 5, 1, 1)
    expected = tracks[:, :1] + steps * vel
    assert out.tracks.shape == (2, 2, 5, 8, 2) and out.visibility.shape == (2, 2, 5, 8)
    torch.testing.assert_close(out.tracks[:, 0], expected)
    torch.testing.assert_close(out.tracks[:, 1], expected)
    assert bool(out.visibility.all())


def test_window_averages_velocity():
    tracks = torch.zeros(5, 1, 2)
    tracks[:, 0, 0] = torch.tensor([0.0, 0.0, 0.0, 1.0, 4.0])  # last steps: +1, +3
    one = constant_velocity_future(tracks, None, 2, window=1)
    two = constant_velocity_future(tracks, None, 2, window=2)
    assert one.tracks[0, :, 0, 0].tolist() == [7.0, 10.0]
    assert two.tracks[0, :, 0, 0].tolist() == [6.0, 8.0]
    assert one.tracks.shape == (1, 2, 1, 2)  # unbatched input: "s tf n 2"


def test_static_holds_last_position_and_visibility():
    tracks, _ = _linear_tracks(b=1)
    vis = torch.ones(1, 9, 8, dtype=torch.bool)
    vis[0, -1, 3] = False
    out = static_future(tracks[0], vis[0], 4)
    assert torch.equal(out.tracks[0], tracks[0, -1:].expand(4, -1, -1))
    assert not bool(out.visibility[0, :, 3].any()) and bool(out.visibility[0, :, :3].all())


def test_points_leaving_the_image_become_invisible_and_are_clipped():
    tracks = torch.zeros(3, 8, 2)
    tracks[:, :, 0] = torch.tensor([100.0, 110.0, 120.0]).view(3, 1)  # +10 px per frame in x
    tracks[:, :, 1] = 30.0
    out = constant_velocity_future(tracks, None, 3, spec=SPEC)
    # x: 130 (outside, W - 1 = 127), 140, 150
    assert not bool(out.visibility.any())
    assert float(out.tracks[..., 0].max()) == pytest.approx(127 - 1e-3)
    inside = static_future(tracks, None, 3, spec=SPEC)
    assert bool(inside.visibility.all())


def test_clip_to_image():
    pts = torch.tensor([[-5.0, 70.0], [10.0, 10.0]])
    clipped = clip_to_image(pts, SPEC)
    torch.testing.assert_close(clipped, torch.tensor([[0.0, 63 - 1e-3], [10.0, 10.0]]))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="window"):
        constant_velocity_future(torch.zeros(2, 8, 2), None, 3, window=2)
    with pytest.raises(ValueError, match="boolean"):
        static_future(torch.zeros(2, 8, 2), torch.ones(2, 8), 3)


def test_linear_fit_is_exact_on_linear_motion():
    from trajloom.flow.baselines import linear_future

    tracks, vel = _linear_tracks()
    out = linear_future(tracks, None, 5, window=6, num_samples=3)
    steps = torch.arange(9, 14, dtype=torch.float32).view(1, 5, 1, 1)
    expected = tracks[:, :1] + steps * vel
    assert out.tracks.shape == (2, 3, 5, 8, 2)
    for k in range(3):
        torch.testing.assert_close(out.tracks[:, k], expected, rtol=1e-5, atol=1e-4)


def test_linear_fit_of_two_frames_is_constant_velocity_and_it_averages_out_jitter():
    from trajloom.flow.baselines import linear_future

    tracks, vel = _linear_tracks(t=12)
    two = linear_future(tracks, None, 4, window=2)
    torch.testing.assert_close(two.tracks, constant_velocity_future(tracks, None, 4).tracks)
    # zero-mean alternating jitter of +-1 px: the two-frame velocity turns it into 2 px per
    # frame of drift (8.5 px mean error here), the line through 8 frames stays within ~1 px
    jitter = torch.tensor([1.0, -1.0] * 6).view(1, 12, 1, 1)
    shaken = tracks + jitter
    truth = tracks[:, -1:] + torch.arange(1, 5, dtype=torch.float32).view(1, 4, 1, 1) * vel
    line = linear_future(shaken, None, 4, window=8).tracks[:, 0]
    velocity = constant_velocity_future(shaken, None, 4).tracks[:, 0]
    line_err = (line - truth).norm(dim=-1).mean()
    velocity_err = (velocity - truth).norm(dim=-1).mean()
    assert line_err < 1.0 and line_err < 0.15 * velocity_err


def test_linear_window_is_checked():
    from trajloom.flow.baselines import linear_future

    tracks, _ = _linear_tracks(t=4)
    with pytest.raises(ValueError, match="window"):
        linear_future(tracks, None, 3, window=1)
    with pytest.raises(ValueError, match="history frames"):
        linear_future(tracks, None, 3, window=5)


def test_baseline_specs_parse_with_windows():
    from trajloom.flow.forecast import ForecastError, load_method, parse_method
    from trajloom.flow.forecast.methods import parse_baseline

    assert parse_baseline("static") == ("static", None)
    assert parse_baseline("constvel") == ("constvel", 1)
    assert parse_baseline("constvel:8") == ("constvel", 8)
    assert parse_baseline("linear") == ("linear", 8)
    assert parse_baseline("linear:4") == ("linear", 4)
    for bad in ("static:3", "constvel:0", "constvel:x", "linear:-2", "constvel:²", "nope"):
        with pytest.raises(ForecastError, match="baseline"):
            parse_method(f"baseline:{bad}")
    method = load_method(parse_method("baseline:linear:4"), torch.device("cpu"), grid=SPEC,
                         history=6, future=3)  # fmt: skip
    assert method.describe()["method"] == "baseline:linear:4"
    with pytest.raises(ForecastError, match=r"1\.\.5"):
        load_method(parse_method("baseline:constvel:6"), torch.device("cpu"), grid=SPEC,
                    history=6, future=3)  # fmt: skip
