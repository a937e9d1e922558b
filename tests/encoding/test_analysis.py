import pytest
import torch

from trajloom.encoding import GridSpec, location_variance_explained, query_points


def _moving_grid(spec, t=24, seed=0):
    """Grid points under a shared camera pan plus a little independent jitter."""
    g = torch.Generator().manual_seed(seed)
    pan = torch.cumsum(torch.randn(1, t, 1, 2, generator=g) * 3.0, dim=1)
    jitter = torch.randn(1, t, spec.num_points, 2, generator=g) * 0.5
    tracks = query_points(spec)[None, None] + pan + jitter
    vis = torch.rand(1, t, spec.num_points, generator=g) > 0.1
    return tracks, vis


def test_absolute_coordinates_are_explained_by_location_offsets_are_not():
    spec = GridSpec()
    tracks, vis = _moving_grid(spec)
    absolute = location_variance_explained(tracks, vis, spec)
    offsets = location_variance_explained(tracks, vis, spec, offsets=True)
    assert absolute["x"] > 0.99 and absolute["y"] > 0.99
    assert offsets["x"] < 0.5 and offsets["y"] < 0.5


def test_static_grid_is_fully_explained_by_location_and_pure_noise_is_not():
    spec = GridSpec(128, 64, 16)
    static = query_points(spec)[None, None].expand(1, 5, -1, -1).clone()
    vis = torch.ones(1, 5, spec.num_points, dtype=torch.bool)
    assert location_variance_explained(static, vis, spec)["x"] == pytest.approx(1.0)
    # same random cloud at every location: the location means are all equal in expectation
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(1, 400, 1, 2, generator=g).expand(1, 400, spec.num_points, 2) * 64
    vis = torch.ones(1, 400, spec.num_points, dtype=torch.bool)
    assert location_variance_explained(noise, vis, spec)["x"] == pytest.approx(0.0, abs=1e-9)


def test_nothing_visible_is_an_error():
    spec = GridSpec(64, 32, 16)
    tracks = query_points(spec)[None, None].expand(1, 3, -1, -1)
    with pytest.raises(ValueError, match="visibility is false everywhere"):
        location_variance_explained(
            tracks, torch.zeros(1, 3, spec.num_points, dtype=torch.bool), spec
        )
