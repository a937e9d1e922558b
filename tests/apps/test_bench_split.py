"""Held out by whole video: windows of one video never land on both sides of a split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from trajloom.data.formats import iter_shard_samples, read_manifest
from trajloom.data.stream import ShardStream, StreamConfig
from trajloom.data.video import write_video
from trajloom_bench.cli import app


def _videos(folder: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(count):
        texture = rng.integers(0, 255, size=(64, 96, 3), dtype=np.uint8)
        frames = np.stack([np.roll(texture, t * (i % 3), axis=1)[:48, :64] for t in range(30)])
        write_video(folder / f"clip{i}.mp4", frames, fps=10)


def test_heldout_real_samples_share_no_source_video_with_training(tmp_path):
    src = tmp_path / "raw"
    _videos(src, 8)
    bench = tmp_path / "bench"
    args = ["build", bench, "--source", f"mine={src}", "--width", 64, "--height", 48,
            "--stride", 16, "--history", 6, "--future", 6, "--windows-per-video", 4,
            "--window-stride", 4, "--quiet"]  # fmt: skip
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    urls, manifest = read_manifest(bench / "mine")
    samples = [s for u in urls for s in iter_shard_samples(Path(u))]
    assert len(samples) == 32 and manifest["num_samples"] == 32
    # every window records its video, and windows of one video overlap in time
    by_video: dict[str, list[str]] = {}
    for s in samples:
        by_video.setdefault(s.meta["source_video"], []).append(s.id)
    assert sorted(by_video) == [f"mine/clip{i}" for i in range(8)]
    assert all(len(ids) == 4 for ids in by_video.values())

    def videos_of(split: str) -> list[str]:
        cfg = StreamConfig(urls=tuple(urls), history=6, future=6, width=64, height=48,
                           stride=16, holdout=0.5, dev_fraction=0.5, split=split,
                           shuffle_shards=False)  # fmt: skip
        clips = list(ShardStream(cfg))
        return [c.meta["source_video"] for c in clips]

    train, dev, test = videos_of("train"), videos_of("dev"), videos_of("test")
    assert train and dev and test
    assert not set(train) & set(dev) and not set(train) & set(test) and not set(dev) & set(test)
    assert sorted(set(train) | set(dev) | set(test)) == sorted(by_video)
    # a video's four windows are all on its side
    for side in (train, dev, test):
        assert all(side.count(v) == 4 for v in set(side))
    assert sorted(videos_of("heldout")) == sorted(dev + test)
    assert json.dumps(manifest)  # the manifest stays plain JSON
