import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trajloom.encoding import from_tapvid, nt_to_tn, rescale_tracks, tn_to_nt, to_tapvid


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 6), t=st.integers(1, 6), seed=st.integers(0, 100))
def test_nt_tn_round_trip_numpy_and_torch(n, t, seed):
    rng = np.random.default_rng(seed)
    tracks = rng.random((n, t, 2)).astype(np.float32)
    vis = rng.random((n, t)) > 0.5
    tn, vtn = nt_to_tn(tracks, vis)
    assert tn.shape == (t, n, 2) and vtn.shape == (t, n)
    assert tn[t - 1, n - 1, 1] == tracks[n - 1, t - 1, 1]
    back, vback = tn_to_nt(tn, vtn)
    assert np.array_equal(back, tracks) and np.array_equal(vback, vis)
    ttn, _ = nt_to_tn(torch.from_numpy(tracks))
    assert torch.equal(ttn, torch.from_numpy(tn))


def test_tapvid_round_trip():
    rng = np.random.default_rng(0)
    points = rng.random((5, 7, 2))
    occluded = rng.random((5, 7)) > 0.5
    tracks, vis = from_tapvid(points, occluded, 256, 128)
    assert tracks.shape == (7, 5, 2)
    assert tracks[3, 2, 0] == pytest.approx(points[2, 3, 0] * 256)
    assert tracks[3, 2, 1] == pytest.approx(points[2, 3, 1] * 128)
    assert np.array_equal(vis, ~occluded.T)
    p2, o2 = to_tapvid(tracks, vis, 256, 128)
    np.testing.assert_allclose(p2, points, rtol=1e-12)
    assert np.array_equal(o2, occluded)


def test_rescale_maps_corners_to_corners():
    tracks = torch.tensor([[[0.0, 0.0], [854.0, 480.0], [427.0, 240.0]]])
    out = rescale_tracks(tracks, (854, 480), (832, 480))
    assert torch.allclose(out, torch.tensor([[[0.0, 0.0], [832.0, 480.0], [416.0, 240.0]]]))
    back = rescale_tracks(out, (832, 480), (854, 480))
    assert torch.allclose(back, tracks)
    with pytest.raises(ValueError, match="positive"):
        rescale_tracks(tracks, (0, 480), (832, 480))


def test_layout_errors_name_the_argument():
    with pytest.raises(ValueError, match="tracks must be"):
        nt_to_tn(np.zeros((3, 4, 3)))
    with pytest.raises(ValueError, match="visibility has shape"):
        nt_to_tn(np.zeros((3, 4, 2)), np.zeros((4, 3), bool))
