"""Latent statistics: streaming accumulation, released JSON schema, (de)normalization."""

from __future__ import annotations

import json

import pytest
import torch

from trajloom.vae import LatentStats, LatentStatsAccumulator, write_latent_stats_json


def _batches(seed=0):
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.5, 3.0, 4)
    return [torch.randn(2, 3, 5, 4, generator=g) * scale + torch.arange(4.0) for _ in range(5)]


def test_streaming_equals_all_at_once_and_merges():
    batches = _batches()
    acc = LatentStatsAccumulator(4)
    for z in batches:
        acc.update(z)
    flat = torch.cat([z.reshape(-1, 4) for z in batches]).double()
    stats = acc.result()
    torch.testing.assert_close(stats.mean.double(), flat.mean(0), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(
        stats.std.double(), flat.std(0, unbiased=False), rtol=1e-6, atol=1e-6
    )
    a, b = LatentStatsAccumulator(4), LatentStatsAccumulator(4)
    for i, z in enumerate(batches):
        (a if i % 2 else b).update(z)
    torch.testing.assert_close(a.merge(b).result().mean, stats.mean)


def test_normalize_round_trip_and_released_arithmetic():
    stats = LatentStats(torch.tensor([1.0, -2.0]), torch.tensor([2.0, 0.0]))
    z = torch.tensor([[3.0, -2.0], [1.0, 5.0]]).to(torch.bfloat16)
    n = stats.normalize(z)
    assert n.dtype == torch.bfloat16
    # channel 1 has std 0: clamped to 1e-8 on the way in, as released
    torch.testing.assert_close(n.float()[:, 0], torch.tensor([1.0, 0.0]))
    assert n.float()[1, 1] == pytest.approx(7.0 / 1e-8, rel=1e-2)
    good = LatentStats(torch.randn(4), torch.rand(4) + 0.5)
    z = torch.randn(3, 7, 4)
    torch.testing.assert_close(good.denormalize(good.normalize(z)), z, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="channels"):
        good.normalize(torch.zeros(2, 3))


def test_json_schema_matches_the_release(tmp_path):
    accs = {k: LatentStatsAccumulator(4) for k in ("z_hist", "z_fut", "z_all")}
    for i, z in enumerate(_batches()):
        accs["z_hist" if i % 2 else "z_fut"].update(z)
        accs["z_all"].update(z)
    path = tmp_path / "vae_latent_stats.json"
    write_latent_stats_json(path, accs, meta={"split": "train"})
    data = json.loads(path.read_text())
    assert set(data) == {"meta", "z_hist", "z_fut", "z_all", "suggested_latent_scale"}
    entry = data["z_all"]
    assert set(entry) == {"count", "mean", "std", "min", "max", "per_channel"}
    assert set(entry["per_channel"]) == {"count", "mean", "std", "min", "max"}
    assert entry["count"] == entry["per_channel"]["count"] * 4
    assert data["suggested_latent_scale"] == pytest.approx(1 / entry["std"])
    loaded = LatentStats.from_json(path)  # key z_all, as the released generator uses
    torch.testing.assert_close(loaded.mean, accs["z_all"].result().mean)
    hist = LatentStats.from_json(path, key="z_hist")
    torch.testing.assert_close(hist.std, accs["z_hist"].result().std)
    hist.to_json(tmp_path / "one.json", key="z_hist")
    torch.testing.assert_close(LatentStats.from_json(tmp_path / "one.json", "z_hist").std, hist.std)
    with pytest.raises(KeyError, match="z_nope"):
        LatentStats.from_json(path, key="z_nope")


def test_reads_the_released_file_layout(tmp_path):
    released = {
        "meta": {"latent_channels": 2},
        "z_all": {
            "count": 4, "mean": 0.0, "std": 1.0, "min": -1.0, "max": 1.0,
            "per_channel": {"count": 2, "mean": [-1.4355, 0.2652], "std": [4.0666, 3.7623],
                            "min": [-1, -1], "max": [1, 1]},
        },
    }  # fmt: skip
    path = tmp_path / "s.json"
    path.write_text(json.dumps(released))
    stats = LatentStats.from_json(path)
    torch.testing.assert_close(stats.mean, torch.tensor([-1.4355, 0.2652]))
    torch.testing.assert_close(stats.std, torch.tensor([4.0666, 3.7623]))


def test_empty_accumulator_is_refused():
    with pytest.raises(ValueError, match="no latents"):
        LatentStatsAccumulator(3).result()
