import numpy as np
import pytest
import torch

from trajloom.data.clip import Clip, clip_windows, collate


def _video(t=10, n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 64, (t, n, 2)).astype(np.float32), rng.random((t, n)) > 0.3


def test_cut_takes_the_history_then_the_future():
    tracks, vis = _video()
    clip = Clip.cut("a", tracks, vis, start=2, history=3, future=4, caption="c")
    np.testing.assert_array_equal(clip.hist_tracks, tracks[2:5])
    np.testing.assert_array_equal(clip.fut_tracks, tracks[5:9])
    np.testing.assert_array_equal(clip.fut_vis, vis[5:9])
    assert (clip.history, clip.future, clip.num_points, clip.start) == (3, 4, 6, 2)
    overlap = Clip.cut("a", tracks, vis, start=2, history=3, future=4, overlap=True)
    np.testing.assert_array_equal(overlap.fut_tracks[0], overlap.hist_tracks[-1])
    history_only = Clip.cut("a", tracks, vis, start=0, history=10, future=0)
    assert history_only.future == 0 and history_only.fut_vis is None


def test_bad_windows_and_shapes_name_the_clip():
    tracks, vis = _video()
    with pytest.raises(ValueError, match="needs 11 frames"):
        Clip.cut("a", tracks, vis, start=5, history=3, future=3)
    with pytest.raises(ValueError, match="clip b: hist_vis"):
        Clip("b", tracks[:3], vis[:2])
    with pytest.raises(ValueError, match="together"):
        Clip("b", tracks[:3], vis[:3], fut_tracks=tracks[3:])
    with pytest.raises(ValueError, match="between 3 and 3"):
        Clip("b", tracks[:3], vis[:3], frames=np.zeros((5, 4, 4, 3), np.uint8))


def test_collate_stacks_and_refuses_a_mix_of_optional_arrays():
    tracks, vis = _video()
    a = Clip.cut("a", tracks, vis, start=0, history=3, future=4, text_emb=np.ones(5))
    b = Clip.cut("b", tracks, vis, start=1, history=3, future=4, text_emb=np.zeros(5))
    batch = collate([a, b])
    assert batch.ids == ["a", "b"] and len(batch) == 2 and batch.starts == [0, 1]
    assert batch.hist_tracks.shape == (2, 3, 6, 2) and batch.fut_vis.dtype == torch.bool
    assert batch.text_emb.shape == (2, 5) and batch.video_latent is None
    hist, _ = batch.window("hist")
    assert torch.equal(hist, batch.hist_tracks)
    c = Clip.cut("c", tracks, vis, start=0, history=3, future=4)
    with pytest.raises(ValueError, match="missing in \\['c'\\]"):
        collate([a, c])
    with pytest.raises(ValueError, match="no future"):
        collate([Clip.cut("d", tracks, vis, start=0, history=3, future=0)])


def test_clip_windows_fit_the_clip():
    assert clip_windows(20, 4, 5, 3) == [0, 3, 6, 9]
    assert clip_windows(8, 4, 5, 3) == [] and clip_windows(9, 4, 5, None) == [0]
    assert clip_windows(8, 4, 5, 1, overlap=True) == [0]
