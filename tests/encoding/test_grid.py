import pytest
import torch

from trajloom.encoding import (
    GridSpec,
    cell_anchors,
    denormalize,
    normalize,
    pixel_anchors,
    query_points,
)


def test_default_grid_is_the_released_one():
    spec = GridSpec()
    assert (spec.grid_h, spec.grid_w, spec.num_points) == (15, 26, 390)
    q = query_points(spec)
    assert q.shape == (390, 2)
    # row-major, y outer: point (i, j) at (j*s, i*s)
    assert q[0].tolist() == [0.0, 0.0]
    assert q[1].tolist() == [32.0, 0.0]
    assert q[26].tolist() == [0.0, 32.0]
    assert q[-1].tolist() == [800.0, 448.0]


def test_anchor_formula_matches_the_convention():
    spec = GridSpec(64, 32, 16)
    a = pixel_anchors(spec, dtype=torch.float64)
    i, j = 5, 40
    assert a[0, i, j].item() == pytest.approx((j + 0.5) / 64 * 2 - 1, abs=1e-7)
    assert a[1, i, j].item() == pytest.approx((i + 0.5) / 32 * 2 - 1, abs=1e-7)


def test_anchor_bits_follow_the_released_linspace_recipe():
    spec = GridSpec()
    ys = torch.linspace(0.5, 480 - 0.5, steps=480)
    xs = torch.linspace(0.5, 832 - 0.5, steps=832)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    ref = (torch.stack([xx, yy]) / torch.tensor([832, 480]).view(2, 1, 1)) * 2.0 - 1.0
    assert torch.equal(pixel_anchors(spec), ref)


def test_cell_anchors_regroup_pixel_anchors():
    spec = GridSpec(96, 64, 16)
    dense = pixel_anchors(spec)
    cells = cell_anchors(spec)
    assert cells.shape == (spec.num_points, 16 * 16, 2)
    n = 1 * spec.grid_w + 2  # cell (1, 2)
    p, q = 3, 7
    assert torch.equal(cells[n, p * 16 + q], dense[:, 16 + p, 32 + q])


def test_normalize_round_trip_and_released_arithmetic():
    spec = GridSpec()
    p = torch.rand(1000, 2) * torch.tensor([832.0, 480.0])
    u = normalize(p, spec)
    assert torch.equal(u, 2 * (p / torch.tensor([832.0, 480.0])) - 1)
    assert torch.allclose(denormalize(u, spec), p, atol=1e-4)
    assert torch.equal(
        normalize(torch.tensor([[0.0, 0.0], [832.0, 480.0]]), spec),
        torch.tensor([[-1.0, -1.0], [1.0, 1.0]]),
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"width": 830}, "multiples of stride"),
        ({"stride": 0}, "positive int"),
        ({"height": 480.0}, "positive int"),
    ],
)
def test_bad_grid_specs_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GridSpec(**kwargs)


def test_spec_json_round_trip():
    spec = GridSpec(256, 128, 16)
    assert GridSpec.from_dict(spec.to_dict()) == spec
