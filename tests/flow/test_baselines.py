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
