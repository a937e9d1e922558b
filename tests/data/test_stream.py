"""Shard stream: exactly-once split over simulated ranks and workers, determinism, windows,
rescaling, frames, bad input skipped and counted (or raised in strict mode)."""

import io
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

import trajloom.data.stream as stream_mod
from trajloom.data.clip import clip_windows, collate
from trajloom.data.shards import ShardSample, encode_shard_sample, write_shards
from trajloom.data.stream import (
    DataError,
    ShardStream,
    SkippedSampleWarning,
    StreamConfig,
    assign_shards,
    make_loader,
)
from trajloom.data.synthetic import SceneConfig, make_scene
from trajloom.data.video import write_video

SCENE = SceneConfig(width=64, height=32, stride=16, num_frames=10, render_frames=False)
# working grid 128x64 stride 32 has the same 4 x 2 = 8 points as the clips' 64x32 stride 16
BASE = {"history": 4, "future": 5, "width": 128, "height": 64, "stride": 32}


def _sample(i: int, *, frames: bool = False, t: int | None = None) -> ShardSample:
    cfg = SCENE if t is None else SceneConfig(**{**SCENE.to_dict(), "num_frames": t})
    if frames:
        cfg = SceneConfig(**{**cfg.to_dict(), "render_frames": True})
    scene = make_scene(i, cfg)
    video = None
    if frames:
        buf = io.BytesIO()
        video_path = Path(f"/tmp/_trajloom_test_{i}.mp4")
        write_video(video_path, scene.frames, crf=0)
        buf.write(video_path.read_bytes())
        video_path.unlink()
        video = buf.getvalue()
    return ShardSample(
        id=f"clip{i}",
        tracks=scene.tracks,
        visibility=scene.visibility,
        meta=scene.meta,
        video=video,
    )


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    write_shards((_sample(i) for i in range(23)), out, maxcount=3)  # 8 shards
    return out


def _fake_worker(monkeypatch, worker, workers):
    info = type("Info", (), {"id": worker, "num_workers": workers})()
    monkeypatch.setattr(stream_mod, "get_worker_info", lambda: info)


def _ids_over(monkeypatch, config, ranks, workers, epoch=0):
    per_slot = []
    for rank in range(ranks):
        for worker in range(workers):
            _fake_worker(monkeypatch, worker, workers)
            ds = ShardStream(config, rank=rank, world_size=ranks)
            ds.set_epoch(epoch)
            per_slot.append([s.id for s in ds])
    return per_slot


@pytest.mark.parametrize(("ranks", "workers"), [(1, 1), (2, 1), (2, 3), (3, 2), (4, 4)])
def test_one_epoch_yields_every_sample_exactly_once(monkeypatch, shards, ranks, workers):
    config = StreamConfig(urls=(str(shards),), shuffle_buffer=4, **BASE)
    per_slot = _ids_over(monkeypatch, config, ranks, workers)
    everything = [i for ids in per_slot for i in ids]
    assert sorted(everything) == sorted(f"clip{i}" for i in range(23))


def test_assignment_is_a_partition_and_depends_on_epoch():
    for slots in (1, 3, 8, 11):
        parts = [assign_shards(8, s, slots, seed=1, epoch=2, shuffle=True) for s in range(slots)]
        assert sorted(i for p in parts for i in p) == list(range(8))
    a = assign_shards(8, 0, 2, seed=1, epoch=0, shuffle=True)
    assert a == assign_shards(8, 0, 2, seed=1, epoch=0, shuffle=True)
    assert any(assign_shards(8, 0, 2, seed=1, epoch=e, shuffle=True) != a for e in range(1, 5))


def test_deterministic_per_seed_and_epoch(monkeypatch, shards):
    config = StreamConfig(urls=(str(shards),), shuffle_buffer=5, seed=7, **BASE)
    first = _ids_over(monkeypatch, config, 2, 2, epoch=1)
    assert first == _ids_over(monkeypatch, config, 2, 2, epoch=1)
    assert first != _ids_over(monkeypatch, config, 2, 2, epoch=2)


def test_resample_is_endless_and_deterministic(shards):
    config = StreamConfig(urls=(str(shards),), resample=True, seed=3, **BASE)
    take = [
        s.id for _, s in zip(range(60), ShardStream(config, rank=0, world_size=1), strict=False)
    ]
    assert len(take) == 60 and set(take) <= {f"clip{i}" for i in range(23)}
    again = [
        s.id for _, s in zip(range(60), ShardStream(config, rank=0, world_size=1), strict=False)
    ]
    assert take == again


def test_windows_and_rescaling(tmp_path):
    sample = _sample(0, t=20)
    write_shards([sample], tmp_path, maxcount=4)
    config = StreamConfig(urls=(str(tmp_path),), window_stride=3, **BASE)
    out = list(ShardStream(config))
    assert [s.start for s in out] == clip_windows(20, 4, 5, 3) == [0, 3, 6, 9]
    scaled = sample.tracks * np.array([2.0, 2.0], np.float32)  # 64x32 -> 128x64
    for s in out:
        st = s.start
        np.testing.assert_allclose(s.hist_tracks, scaled[st : st + 4])
        np.testing.assert_allclose(s.fut_tracks, scaled[st + 4 : st + 9])
        np.testing.assert_array_equal(s.fut_vis, sample.visibility[st + 4 : st + 9])
    overlap = next(iter(ShardStream(StreamConfig(urls=(str(tmp_path),), overlap=True, **BASE))))
    np.testing.assert_array_equal(overlap.fut_tracks[0], overlap.hist_tracks[-1])


def test_frames_are_decoded_at_the_frame_size(tmp_path):
    samples = [_sample(i, frames=True) for i in range(2)]
    write_shards(samples, tmp_path)
    config = StreamConfig(urls=(str(tmp_path),), decode_frames=True, frame_size=(64, 32), **BASE)
    out = list(ShardStream(config))
    assert out[0].frames.shape == (4, 32, 64, 3) and out[0].frames.dtype == np.uint8
    truth = make_scene(0, SceneConfig(**{**SCENE.to_dict(), "render_frames": True})).frames[:4]
    assert np.abs(out[0].frames.astype(int) - truth).mean() < 4.0
    batch = collate(out)
    assert batch.frames.shape == (2, 4, 32, 64, 3)
    assert batch.hist_tracks.shape == (2, 4, 8, 2) and batch.ids == ["clip0", "clip1"]


def _write_raw_tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _members(sample, **override):
    enc = encode_shard_sample(sample)
    key = enc.pop("__key__")
    enc.update(override)
    return [(f"{key}.{ext}", data) for ext, data in enc.items() if data is not None]


@pytest.fixture
def bad_shards(tmp_path):
    good = [_sample(i) for i in range(6)]
    nan = _sample(10)
    nan.tracks = nan.tracks.copy()
    nan.tracks[2, 1, 0] = np.nan
    buf = io.BytesIO()
    np.save(buf, nan.tracks)
    members = (
        _members(good[0])
        + _members(_sample(11), **{"tracks.npy": b"\x93NUMPY garbage"})  # corrupt member
        + [m for m in _members(_sample(12)) if not m[0].endswith("visibility.npy")]  # missing
        + _members(_sample(10), **{"tracks.npy": buf.getvalue()})  # NaN tracks
        + _members(_sample(13, t=6))  # shorter than the 9-frame window
        + _members(good[1])
    )
    _write_raw_tar(tmp_path / "a.tar", members)
    # a truncated shard: two good samples, cut inside the third
    _write_raw_tar(tmp_path / "b.tar", _members(good[2]) + _members(good[3]) + _members(good[4]))
    with tarfile.open(tmp_path / "b.tar") as tar:
        last = tar.getmembers()[-1]
    data = (tmp_path / "b.tar").read_bytes()
    (tmp_path / "b.tar").write_bytes(data[: last.offset_data + last.size // 2])
    # tracks on another grid: 6 x 4 points
    other = ShardSample(
        id="grid",
        tracks=np.zeros((10, 24, 2), np.float32),
        visibility=np.ones((10, 24), bool),
        meta={"width": 64, "height": 32},
    )
    _write_raw_tar(tmp_path / "c.tar", _members(other) + _members(good[5]))
    return tmp_path


def test_bad_input_is_skipped_with_named_warnings_and_counted(bad_shards):
    urls = [str(bad_shards / n) for n in ("a.tar", "b.tar", "c.tar")]
    ds = ShardStream(StreamConfig(urls=tuple(urls), shuffle_shards=False, **BASE))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids = [s.id for s in ds]
    messages = [str(w.message) for w in caught if issubclass(w.category, SkippedSampleWarning)]
    assert "clip0" in ids and "clip1" in ids and "clip5" in ids
    assert not {"clip10", "clip11", "clip12", "clip13", "grid"} & set(ids)
    reasons = ds.stats.skipped
    assert reasons["corrupt_member"] == 1 and reasons["missing_member"] == 1
    assert reasons["nan_tracks"] == 1 and reasons["too_short"] == 1
    assert reasons["corrupt_shard"] == 1 and reasons["grid_mismatch"] == 1
    assert ds.stats.windows_yielded == len(ids)
    assert any("a.tar:clip11" in m and "corrupt_member" in m for m in messages)
    assert any("b.tar" in m and "corrupt_shard" in m for m in messages)
    assert len(messages) == ds.stats.samples_skipped


def test_strict_mode_raises(bad_shards):
    ds = ShardStream(StreamConfig(urls=(str(bad_shards / "a.tar"),), strict=True, **BASE))
    with pytest.raises(DataError, match=r"a\.tar:clip11.*corrupt_member"):
        list(ds)


def test_undecodable_video_is_skipped(tmp_path):
    sample = _sample(0)
    sample.video = b"\x00\x01 not a video"
    write_shards([sample, _sample(1, frames=True)], tmp_path)
    ds = ShardStream(
        StreamConfig(urls=(str(tmp_path),), decode_frames=True, shuffle_shards=False, **BASE)
    )
    with pytest.warns(SkippedSampleWarning, match="clip0.*undecodable_video"):
        ids = [s.id for s in ds]
    assert ids == ["clip1"] and ds.stats.skipped["undecodable_video"] == 1


def test_dataloader_with_two_workers_yields_each_once_and_reports_stats(bad_shards, shards):
    urls = (str(shards), str(bad_shards / "a.tar"))
    ds = ShardStream(StreamConfig(urls=urls, shuffle_buffer=3, **BASE))
    loader = make_loader(ds, batch_size=4, num_workers=2)
    ids = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedSampleWarning)
        for batch in loader:
            ids.extend(batch.ids)
            ds.stats.absorb(batch)
    expected = {f"clip{i}" for i in range(23)} | {"clip0", "clip1"}
    assert sorted(ids) == sorted([f"clip{i}" for i in range(23)] + ["clip0", "clip1"])
    assert set(ids) == expected
    assert ds.stats.windows_yielded == len(ids)
    # the skips of a.tar come before its last good sample, so they reach the main process
    assert ds.stats.samples_skipped == 4


def test_config_round_trip_and_validation(shards):
    config = StreamConfig(urls=(str(shards),), frame_size=(64, 32), **BASE)
    assert StreamConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="multiples of stride"):
        StreamConfig(urls=("x",), width=100)
    with pytest.raises(ValueError, match="name no shards"):
        ShardStream(StreamConfig(urls=(str(shards / "nothing-{0..0}.tar")[:0],)))


def test_camera_phrase_is_appended_once(tmp_path):
    from trajloom.data.stream import caption_with_camera

    assert (
        caption_with_camera("A dog runs.", "the camera pans left")
        == "A dog runs; the camera pans left."
    )
    assert caption_with_camera("", "static camera") == "Static camera."
    assert caption_with_camera("x; static camera.", "static camera") == "x; static camera."
    sample = _sample(0)
    sample.meta = {**sample.meta, "caption": "A thing moves.", "camera": "the camera rolls"}
    write_shards([sample], tmp_path)
    out = next(iter(ShardStream(StreamConfig(urls=(str(tmp_path),), **BASE))))
    assert out.caption == "A thing moves; the camera rolls." and out.camera == "the camera rolls"
    plain = next(
        iter(ShardStream(StreamConfig(urls=(str(tmp_path),), append_camera=False, **BASE)))
    )
    assert plain.caption == "A thing moves."


def test_missing_shard_is_skipped_not_fatal(shards, tmp_path):
    urls = (str(tmp_path / "gone.tar"), str(shards / "shard-000000.tar"))
    ds = ShardStream(StreamConfig(urls=urls, shuffle_shards=False, **BASE))
    with pytest.warns(SkippedSampleWarning, match=r"gone\.tar.*corrupt_shard.*cannot open"):
        ids = [s.id for s in ds]
    assert ids == ["clip0", "clip1", "clip2"] and ds.stats.skipped["corrupt_shard"] == 1


def test_held_out_split_partitions_samples_by_source_video(monkeypatch, shards):
    from trajloom.data.stream import heldout_key

    def ids(**kw) -> list[str]:
        config = StreamConfig(urls=(str(shards),), shuffle_shards=False, **BASE, **kw)
        return [s.id for s in ShardStream(config, rank=0, world_size=1)]

    everything = ids()
    train, held = ids(holdout=0.3), ids(holdout=0.3, split="heldout")
    assert sorted(train + held) == sorted(everything) and not set(train) & set(held)
    assert held == [k for k in everything if heldout_key(k, 0.3)] and 0 < len(held) < 23
    # by key alone: the same split whatever the shard order or the number of ranks
    per_rank = _ids_over(monkeypatch, StreamConfig(urls=(str(shards),), **BASE, holdout=0.3), 3, 1)
    assert sorted(k for ids_ in per_rank for k in ids_) == sorted(train)
    assert ids(holdout=0.0, split="heldout") == []
    with pytest.raises(ValueError, match="holdout must be in"):
        StreamConfig(urls=(str(shards),), holdout=1.0)
    with pytest.raises(ValueError, match="split must be one of"):
        StreamConfig(urls=(str(shards),), split="validation")
