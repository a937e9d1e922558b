"""Formats: exact round trips of every on-disk layout and clear errors on bad files."""

import json

import numpy as np
import pytest
import webdataset as wds

from trajloom.data import formats
from trajloom.data.checks import FormatError
from trajloom.data.names import canonical_id
from trajloom.data.released import (
    load_released_npz,
    read_captions_csv,
    save_released_npz,
    write_captions_csv,
)
from trajloom.data.runs import RunFolder, read_run_folder, sanitize_predictions, write_run_folder
from trajloom.data.shards import (
    ShardSample,
    convert_released_to_shards,
    decode_shard_sample,
    encode_shard_sample,
    iter_shard_samples,
    read_manifest,
    shard_key,
    write_shards,
)
from trajloom.data.video import read_video, write_video
from trajloom.data.wanmove import read_wanmove, write_wanmove


def _tracks(t=9, n=5, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((t, n, 2)) * 100).astype(np.float32), rng.random((t, n)) > 0.3


def _raw_samples(urls):
    return list(wds.WebDataset(urls, shardshuffle=False))


def test_released_npz_round_trip_is_exact_and_layout_is_n_t(tmp_path):
    tracks, vis = _tracks()
    path = save_released_npz(tmp_path / "clip.npz", tracks, vis)
    with np.load(path) as raw:
        assert raw["tracks"].shape == (5, 9, 2) and raw["visibility"].shape == (5, 9)
        np.testing.assert_array_equal(raw["tracks"][2, 4], tracks[4, 2])
    back_t, back_v = load_released_npz(path)
    np.testing.assert_array_equal(back_t, tracks)
    np.testing.assert_array_equal(back_v, vis)


@pytest.mark.parametrize(
    ("tkey", "vkey"), [("trajectory", "vis"), ("trajectories", "visibilities")]
)
def test_released_key_fallbacks(tmp_path, tkey, vkey):
    tracks, vis = _tracks()
    np.savez(tmp_path / "a.npz", **{tkey: tracks.swapaxes(0, 1), vkey: vis.swapaxes(0, 1)})
    back_t, back_v = load_released_npz(tmp_path / "a.npz")
    np.testing.assert_array_equal(back_t, tracks)
    np.testing.assert_array_equal(back_v, vis)


def test_released_npz_errors(tmp_path):
    np.savez(tmp_path / "keys.npz", points=np.zeros((3, 4, 2)))
    with pytest.raises(FormatError, match=r"keys\.npz.*found \['points'\]"):
        load_released_npz(tmp_path / "keys.npz")
    tracks, vis = _tracks()
    tracks[3, 1, 0] = np.nan
    np.savez(tmp_path / "nan.npz", tracks=tracks.swapaxes(0, 1), visibility=vis.swapaxes(0, 1))
    with pytest.raises(FormatError, match=r"nan\.npz.*1 NaN"):
        load_released_npz(tmp_path / "nan.npz")
    assert load_released_npz(tmp_path / "nan.npz", allow_nonfinite=True)[0].shape == (9, 5, 2)
    with pytest.raises(FormatError, match="does not exist"):
        load_released_npz(tmp_path / "none.npz")


def test_captions_csv_round_trip_and_fallbacks(tmp_path):
    caps = {"6764402": 'a dog, "running"', "b": "two\nlines"}
    path = write_captions_csv(tmp_path / "c.csv", caps)
    assert path.read_text().splitlines()[0] == "videoid,video_path,text"
    assert read_captions_csv(path) == caps
    (tmp_path / "d.csv").write_text("videoid,video_path,text\n,clips/x7.mp4,hello\n")
    assert read_captions_csv(tmp_path / "d.csv") == {"x7": "hello"}
    (tmp_path / "e.csv").write_text("name,whatever\n1,2\n")
    with pytest.raises(FormatError, match="videoid, video_path, text"):
        read_captions_csv(tmp_path / "e.csv")


def test_ids_and_keys():
    assert canonical_id("/a/b/6764402.mp4") == "6764402"
    assert shard_key("clip.v2/x") == "clip_v2_x"


def test_shards_round_trip_with_manifest(tmp_path):
    samples = []
    for i in range(7):
        tracks, vis = _tracks(seed=i)
        samples.append(
            ShardSample(
                id=f"clip.{i}",
                tracks=tracks,
                visibility=vis,
                meta={"width": 64, "height": 48, "stride": 16, "fps": 16.0, "source": "s"},
                text=np.full(4, i, np.float32) if i % 2 else None,
            )
        )
    manifest = write_shards(samples, tmp_path, maxcount=3)
    assert [s["count"] for s in manifest["shards"]] == [3, 3, 1]
    assert manifest["num_samples"] == 7 and manifest["resolutions"] == {"64x48": 7}
    urls, again = read_manifest(tmp_path)
    assert again == manifest and len(urls) == 3
    decoded = [decode_shard_sample(raw) for raw in _raw_samples(urls)]
    assert [d.id for d in decoded] == [s.id for s in samples]
    for d, s in zip(decoded, samples, strict=True):
        np.testing.assert_array_equal(d.tracks, s.tracks)
        np.testing.assert_array_equal(d.visibility, s.visibility)
        assert d.meta["width"] == 64 and d.meta["id"] == s.id
        if s.text is None:
            assert d.text is None
        else:
            np.testing.assert_array_equal(d.text, s.text)


def test_iter_shard_samples_reads_a_tar_in_file_order(tmp_path):
    samples = []
    for i in range(5):
        tracks, vis = _tracks(seed=i)
        meta = {"width": 64, "height": 48, "stride": 16, "fps": 16.0, "source": "s"}
        samples.append(ShardSample(id=f"clip.{i}", tracks=tracks, visibility=vis, meta=meta))
    write_shards(samples, tmp_path, maxcount=3)
    urls, _ = read_manifest(tmp_path)
    read = [s for url in urls for s in iter_shard_samples(url)]
    assert [s.id for s in read] == [s.id for s in samples]
    expected = [decode_shard_sample(raw) for raw in _raw_samples(urls)]
    for got, want in zip(read, expected, strict=True):
        np.testing.assert_array_equal(got.tracks, want.tracks)
        np.testing.assert_array_equal(got.visibility, want.visibility)
        assert got.meta == want.meta
    broken = tmp_path / "broken.tar"
    broken.write_bytes(b"not a tar")
    with pytest.raises(FormatError, match="not a readable shard tar") as info:
        list(iter_shard_samples(broken))
    assert info.value.reason == "corrupt_shard"


def test_decode_rejects_bad_members():
    tracks, vis = _tracks()

    good = encode_shard_sample(
        ShardSample(id="a", tracks=tracks, visibility=vis, meta={"width": 8, "height": 8})
    )
    good["__url__"] = "s.tar"
    missing = {k: v for k, v in good.items() if k != "visibility.npy"}
    with pytest.raises(FormatError, match=r"s\.tar:a.*visibility\.npy is missing"):
        decode_shard_sample(missing)
    with pytest.raises(FormatError, match=r"tracks\.npy: not a readable"):
        decode_shard_sample({**good, "tracks.npy": b"garbage"})
    bad = tracks.copy()
    bad[0, 0, 0] = np.nan
    import io

    buf = io.BytesIO()
    np.save(buf, bad)
    with pytest.raises(FormatError, match="NaN"):
        decode_shard_sample({**good, "tracks.npy": buf.getvalue()})


def test_convert_released_folder(tmp_path):
    src = tmp_path / "released"
    frames = np.zeros((9, 48, 64, 3), np.uint8)
    for i in range(3):
        tracks, vis = _tracks(seed=i)
        save_released_npz(src / f"v{i}.npz", tracks, vis)
        if i < 2:
            write_video(src / f"v{i}.mp4", frames + 40 * i)
    write_captions_csv(src / "captions.csv", {"v0": "zero", "v1": "one"})
    out = tmp_path / "shards"
    manifest = convert_released_to_shards(src, out, maxcount=2)
    # v2 has no video and no size was given: skipped with its reason
    assert manifest["num_samples"] == 2
    assert len(manifest["skipped"]) == 1 and "v2.npz" in manifest["skipped"][0]
    decoded = [decode_shard_sample(r) for r in _raw_samples(read_manifest(out)[0])]
    assert [d.meta["caption"] for d in decoded] == ["zero", "one"]
    assert decoded[1].size == (64, 48)
    assert read_video(decoded[1].video).shape == (9, 48, 64, 3)
    np.testing.assert_array_equal(decoded[0].tracks, load_released_npz(src / "v0.npz")[0])
    manifest = convert_released_to_shards(src, tmp_path / "s2", size=(64, 48), include_video=False)
    assert manifest["num_samples"] == 3 and manifest["skipped"] == []
    assert "video.mp4" not in manifest["members"]


def test_run_folder_round_trip(tmp_path):
    pred, pvis = _tracks(seed=1)
    gt, gvis = _tracks(seed=2)
    run = RunFolder(
        query_xy=gt[0],
        pred_tracks=pred,
        pred_visibility=pvis,
        gt_tracks=gt,
        gt_visibility=gvis,
        pred_visibility_prob=pvis.astype(np.float32) * 0.9,
        meta={"id": "x", "fps": 16},
    )
    folder = write_run_folder(tmp_path / "x", run)
    assert np.load(folder / "pred_visibility.npy").dtype == np.uint8
    back = read_run_folder(folder)
    for name in ("query_xy", "pred_tracks", "pred_visibility", "gt_tracks", "gt_visibility"):
        np.testing.assert_array_equal(getattr(back, name), getattr(run, name))
    assert back.meta == run.meta
    assert json.loads((folder / "meta.json").read_text()) == run.meta


def test_sanitize_predictions_hides_points_outside_and_clips():
    tracks = np.array([[[-3.0, 5.0], [50.0, 40.0], [127.5, 10.0], [10.0, np.nan]]], np.float32)
    vis = np.ones((1, 4), bool)
    out, v = sanitize_predictions(tracks, vis, (128, 96))
    assert v.tolist() == [[False, True, False, False]]
    assert out[0, 0, 0] == 0.0 and out[0, 2, 0] == pytest.approx(127 - 1e-3)
    np.testing.assert_array_equal(out[0, 1], tracks[0, 1])
    assert np.isfinite(out).all()
    inf = np.array([[[np.inf, 5.0], [10.0, -np.inf]]], np.float32)
    out, v = sanitize_predictions(inf, np.ones((1, 2), bool), (128, 96))
    assert v.tolist() == [[False, False]] and out.tolist() == [[[0.0, 5.0], [10.0, 0.0]]]
    assert np.isnan(tracks[0, 3, 1])  # the input is not changed


def test_wanmove_round_trip_and_rescale(tmp_path):
    tracks, vis = _tracks()
    tp, vp = write_wanmove(tmp_path, "x", tracks, vis, src_size=(100, 50), image_size=(200, 25))
    raw_t, raw_v = np.load(tp), np.load(vp)
    assert raw_t.shape == (1, 9, 5, 2) and raw_t.dtype == np.float32
    assert raw_v.shape == (1, 9, 5) and raw_v.dtype == np.bool_
    back_t, back_v = read_wanmove(tmp_path, "x")
    np.testing.assert_allclose(back_t, tracks * np.array([2.0, 0.5], np.float32))
    np.testing.assert_array_equal(back_v, vis)


def test_decode_rejects_bad_meta_and_non_numeric_embeddings():
    import io

    tracks, vis = _tracks()
    good = encode_shard_sample(
        ShardSample(id="a", tracks=tracks, visibility=vis, meta={"width": 8, "height": 8})
    )
    bad_meta = {**good, "meta.json": json.dumps({"width": "wide", "height": 8}).encode()}
    with pytest.raises(FormatError, match="'width' must be a positive int") as info:
        decode_shard_sample(bad_meta)
    assert info.value.reason == "bad_meta"
    buf = io.BytesIO()
    np.save(buf, np.array(["a", "b"]))
    with pytest.raises(FormatError, match=r"text\.npy: must be numeric"):
        decode_shard_sample({**good, "text.npy": buf.getvalue()})


def test_converter_estimates_the_camera_phrase(tmp_path):
    from trajloom.data.synthetic import CameraPath, SceneConfig, make_scene

    cfg = SceneConfig(width=128, height=96, stride=16, num_frames=24, render_frames=False)
    scene = make_scene(0, cfg, camera=CameraPath(tilt=-0.01))
    save_released_npz(tmp_path / "src" / "tilt.npz", scene.tracks, scene.visibility)
    convert_released_to_shards(tmp_path / "src", tmp_path / "out", size=(128, 96))
    (decoded,) = [decode_shard_sample(r) for r in _raw_samples(read_manifest(tmp_path / "out")[0])]
    assert decoded.meta["camera"] == scene.camera_phrase == "the camera tilts down"


def test_formats_still_exports_every_name_of_the_split_modules():
    from trajloom.data import checks, names, released, runs, shards, wanmove

    owners = (checks, names, released, runs, shards, wanmove)
    for name in formats.__all__:
        origin = next(m for m in owners if name in m.__all__)
        assert getattr(formats, name) is getattr(origin, name)


def test_folder_captions_reads_the_sole_csv_only(tmp_path):
    from trajloom.data.released import folder_captions, sole_csv

    assert folder_captions(tmp_path) == {} and sole_csv(tmp_path) is None
    write_captions_csv(tmp_path / "caps.csv", {"7": "a dog runs"})
    assert folder_captions(tmp_path) == {"7": "a dog runs"}
    (tmp_path / "other.csv").write_text("videoid,text\n8,a cat\n")
    assert folder_captions(tmp_path) == {} and sole_csv(tmp_path) is None  # ambiguous
    (tmp_path / "other.csv").unlink()
    (tmp_path / "caps.csv").write_text("nothing,useful\n1,2\n")
    assert folder_captions(tmp_path) == {}  # not a captions CSV: no captions, no error
