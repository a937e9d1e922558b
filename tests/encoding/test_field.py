import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trajloom.encoding import (
    GridSpec,
    broadcast_cells,
    decode_offsets,
    encode_offsets,
    normalize,
    patch_embed_cells,
    patch_embed_dense,
    patchify,
    rasterize,
    read_back,
    read_back_patches,
    unpatchify,
)


def _clip(spec, b=2, t=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    size = torch.tensor([spec.width, spec.height], dtype=torch.float32)
    tracks = torch.rand(b, t, spec.num_points, 2, generator=g) * size
    vis = torch.rand(b, t, spec.num_points, generator=g) > 0.3
    return tracks, vis


specs = st.builds(
    lambda s, h, w: GridSpec(width=w * s, height=h * s, stride=s),
    st.sampled_from([4, 8, 16]),
    st.integers(1, 5),
    st.integers(1, 6),
)


@settings(max_examples=25, deadline=None)
@given(spec=specs, b=st.integers(1, 2), t=st.integers(1, 4), seed=st.integers(0, 1000))
def test_rasterize_then_read_back_is_exact(spec, b, t, seed):
    tracks, vis = _clip(spec, b, t, seed)
    field, mask = rasterize(tracks, vis, spec)
    assert field.shape == (b, t, 2, spec.height, spec.width)
    assert torch.equal(read_back(field, spec), normalize(tracks, spec))
    assert torch.equal(read_back(mask[:, :, None].expand(-1, -1, 2, -1, -1), spec)[..., 0], vis)


@settings(max_examples=25, deadline=None)
@given(spec=specs, seed=st.integers(0, 1000))
def test_field_is_piecewise_constant_on_cells(spec, seed):
    tracks, vis = _clip(spec, 1, 2, seed)
    field, _ = rasterize(tracks, vis, spec)
    patches = patchify(field, spec)  # b t n (p q) c
    assert torch.equal(patches, broadcast_cells(normalize(tracks, spec), spec))
    assert torch.equal(unpatchify(patches, spec), field)
    assert torch.equal(read_back_patches(patches), normalize(tracks, spec))


@settings(max_examples=25, deadline=None)
@given(spec=specs, seed=st.integers(0, 1000))
def test_offsets_round_trip(spec, seed):
    tracks, vis = _clip(spec, 1, 2, seed)
    # float32 coordinates, offsets computed in float64: the difference of two float32
    # numbers of similar size fits in float64, so the round trip is exact
    field64 = rasterize(tracks, vis, spec)[0].double()
    assert torch.equal(decode_offsets(encode_offsets(field64, spec), spec), field64)
    field32 = field64.float()
    back = decode_offsets(encode_offsets(field32, spec), spec)
    # two float32 roundings (subtract, add back) on values in [-2, 2]: at most 2 eps
    assert (back - field32).abs().max() <= 2 * torch.finfo(torch.float32).eps


def test_offsets_of_points_at_their_anchor_are_zero_at_the_query_pixel():
    spec = GridSpec(64, 32, 16)
    # a point at the centre of its query pixel (x + 0.5, y + 0.5)
    from trajloom.encoding import query_points

    tracks = (query_points(spec) + 0.5)[None, None]
    vis = torch.ones(1, 1, spec.num_points, dtype=torch.bool)
    off = encode_offsets(rasterize(tracks, vis, spec)[0], spec)
    assert read_back(off, spec).abs().max() < 1e-6


@pytest.mark.parametrize("offsets", [True, False])
def test_compact_patch_embedding_equals_dense_conv(offsets):
    spec = GridSpec(128, 96, 16)
    tracks, vis = _clip(spec, 2, 3)
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(24, 2, 16, 16, generator=g, dtype=torch.float64)
    bias = torch.randn(24, generator=g, dtype=torch.float64)
    field = rasterize(tracks.double(), vis, spec)[0]
    if offsets:
        field = encode_offsets(field, spec)
    dense = patch_embed_dense(field.flatten(0, 1), weight, bias, spec).unflatten(0, (2, 3))
    compact = patch_embed_cells(
        normalize(tracks.double(), spec), weight, bias, spec, offsets=offsets
    )
    torch.testing.assert_close(compact, dense, rtol=1e-12, atol=1e-10)


def test_compact_patch_embedding_float32_at_the_paper_grid():
    spec = GridSpec()
    tracks, vis = _clip(spec, 1, 2)
    weight = torch.randn(32, 2, 32, 32) * 0.02
    bias = torch.randn(32)
    field = encode_offsets(rasterize(tracks, vis, spec)[0], spec)
    dense = patch_embed_dense(field.flatten(0, 1), weight, bias, spec).unflatten(0, (1, 2))
    compact = patch_embed_cells(normalize(tracks, spec), weight, bias, spec)
    torch.testing.assert_close(compact, dense, rtol=1e-4, atol=1e-4)


def test_bad_inputs_name_the_argument():
    spec = GridSpec(64, 32, 16)
    tracks, vis = _clip(spec, 1, 2)
    with pytest.raises(ValueError, match=r"tracks must end in 2"):
        rasterize(tracks[..., :1], vis, spec)
    with pytest.raises(ValueError, match=r"N=7 tracks"):
        rasterize(tracks[:, :, :7], vis[:, :, :7], spec)
    bad = tracks.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"tracks holds 1 NaN or inf"):
        rasterize(bad, vis, spec)
    with pytest.raises(ValueError, match=r"visibility must be boolean"):
        rasterize(tracks, vis.float(), spec)
    with pytest.raises(ValueError, match=r"zero frames"):
        rasterize(tracks[:, :0], vis[:, :0], spec)
    with pytest.raises(ValueError, match=r"visibility has shape"):
        rasterize(tracks, vis[:, :1], spec)
    with pytest.raises(ValueError, match=r"expects 64x32"):
        read_back(torch.zeros(1, 2, 16, 16), spec)
