"""apps/train on WebDataset shards written by trajloom.data (the non-synthetic data path)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from trajloom.data.shards import ShardSample, write_shards
from trajloom.data.synthetic import make_scene
from trajloom_train.config import apply_overrides
from trajloom_train.data import ShardClips, scene_config
from trajloom_train.distributed import Dist
from trajloom_train.recipes import ci
from trajloom_train.stages import RunContext, run_stage


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    data = ci().data
    cfg = scene_config(data)
    samples = []
    for i in range(10):
        scene = make_scene(100 + i, cfg)
        meta = {**scene.meta, "id": f"clip-{i}"}
        samples.append(ShardSample(f"clip-{i}", scene.tracks, scene.visibility, meta=meta))
    out = tmp_path_factory.mktemp("shards")
    write_shards(samples, out, maxcount=4)
    return out


def _recipe(shards: Path):
    r = ci()
    r = replace(r, data=replace(r.data, source="shards", shards=(str(shards),), shuffle_buffer=0))
    return apply_overrides(
        r, ["vae.steps=3", "vae.val_every=0", "vae.batch_size=4", "vae.micro_batch_size=4"]
    )


def test_vae_stage_trains_on_shards(shards, tmp_path):
    summary = run_stage(RunContext(_recipe(shards), tmp_path, Dist(), progress=False), "vae")
    assert summary["finished"] and (tmp_path / "vae" / "final" / "model.safetensors").is_file()


def test_resumed_position_reads_the_same_clips(shards):
    data = _recipe(shards).data
    straight = ShardClips(data, 0, Dist())
    batches = [straight.take(i * 4, 4) for i in range(4)]  # 16 samples: wraps into epoch 1
    resumed = ShardClips(data, 0, Dist())
    late = resumed.take(8, 4)  # a resumed process fast-forwards to its position
    assert late.ids == batches[2].ids
    assert torch.equal(late.hist_tracks, batches[2].hist_tracks)


def test_empty_shard_folder_is_refused(tmp_path):
    data = replace(_recipe(tmp_path).data, shards=(str(tmp_path),))
    with pytest.raises(ValueError):
        ShardClips(data, 0, Dist()).check()
