"""Per-channel latent statistics and latent normalization (paper appendix A.2).

The flow model works on ``(z - mean) / std`` per latent channel. Statistics are
accumulated in one streaming pass (float64 sums, as the released
``compute_trajloom_latent_stats_from_cache.py``) and stored in the released
``vae_latent_stats.json`` schema: top-level keys ``z_hist``, ``z_fut``, ``z_all``, each
``{count, mean, std, min, max, per_channel: {count, mean[c], std[c], min[c], max[c]}}``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["LatentStats", "LatentStatsAccumulator", "write_latent_stats_json"]


@dataclass(frozen=True)
class LatentStats:
    """Per-channel mean and std, ``"c"`` each (float32)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __post_init__(self) -> None:
        if self.mean.dim() != 1 or self.mean.shape != self.std.shape:
            raise ValueError(
                f"LatentStats: mean and std must be 'c' of equal length, got "
                f"{tuple(self.mean.shape)} and {tuple(self.std.shape)}"
            )

    @property
    def channels(self) -> int:
        return self.mean.shape[0]

    def _check(self, z: torch.Tensor) -> None:
        if z.shape[-1] != self.channels:
            raise ValueError(
                f"latents end in {z.shape[-1]} channels but the statistics have {self.channels}"
            )

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """``(z - mean) / max(std, 1e-8)`` over the last axis, in float32, cast back (released)."""
        self._check(z)
        mean = self.mean.to(device=z.device, dtype=torch.float32)
        std = self.std.to(device=z.device, dtype=torch.float32).clamp_min(1e-8)
        return ((z.float() - mean) / std).to(z.dtype)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """``z * std + mean`` over the last axis (released ``unscale_latents``)."""
        self._check(z)
        mean = self.mean.to(device=z.device, dtype=torch.float32)
        std = self.std.to(device=z.device, dtype=torch.float32)
        return (z.float() * std + mean).to(z.dtype)

    @classmethod
    def from_json(cls, path: str | Path, key: str = "z_all") -> LatentStats:
        """Read ``key`` (``z_all`` by default, what the released generator uses)."""
        data = json.loads(Path(path).read_text())
        if key not in data:
            raise KeyError(f"{path} has no latent statistics {key!r}; available: {sorted(data)}")
        pc = data[key]["per_channel"]
        return cls(
            torch.tensor(pc["mean"], dtype=torch.float32),
            torch.tensor(pc["std"], dtype=torch.float32),
        )

    def to_json(
        self, path: str | Path, key: str = "z_all", meta: dict[str, Any] | None = None
    ) -> None:
        """Write a stats file with this entry under ``key`` (released schema, mean/std only)."""
        entry = {"per_channel": {"mean": self.mean.tolist(), "std": self.std.tolist()}}
        _write(path, {key: entry}, meta or {"latent_channels": self.channels})


class LatentStatsAccumulator:
    """Streaming per-channel statistics of latents ``"... c"`` (float64 sums)."""

    def __init__(self, channels: int) -> None:
        if channels <= 0:
            raise ValueError(f"channels must be positive, got {channels}")
        self.channels = channels
        self.count = 0  # latent vectors seen
        self.sum = torch.zeros(channels, dtype=torch.float64)
        self.sumsq = torch.zeros(channels, dtype=torch.float64)
        self.min = torch.full((channels,), math.inf, dtype=torch.float64)
        self.max = torch.full((channels,), -math.inf, dtype=torch.float64)

    @torch.no_grad()
    def update(self, z: torch.Tensor) -> None:
        """Add latents ``"... c"`` (any leading shape)."""
        if z.shape[-1] != self.channels:
            raise ValueError(f"expected latents '... {self.channels}', got {tuple(z.shape)}")
        flat = z.detach().float().reshape(-1, self.channels)
        if flat.shape[0] == 0:
            return
        self.count += flat.shape[0]
        self.sum += flat.sum(dim=0, dtype=torch.float64).cpu()
        self.sumsq += (flat * flat).sum(dim=0, dtype=torch.float64).cpu()
        self.min = torch.minimum(self.min, flat.min(dim=0).values.double().cpu())
        self.max = torch.maximum(self.max, flat.max(dim=0).values.double().cpu())

    def merge(self, other: LatentStatsAccumulator) -> LatentStatsAccumulator:
        """Fold another accumulator (e.g. from another rank) into this one."""
        if other.channels != self.channels:
            raise ValueError(f"cannot merge {other.channels} channels into {self.channels}")
        self.count += other.count
        self.sum += other.sum
        self.sumsq += other.sumsq
        self.min = torch.minimum(self.min, other.min)
        self.max = torch.maximum(self.max, other.max)
        return self

    def _moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.count == 0:
            raise ValueError("no latents were accumulated; call update() first")
        mean = self.sum / self.count
        var = (self.sumsq / self.count - mean**2).clamp_min(0.0)
        return mean, var.sqrt()

    def result(self) -> LatentStats:
        mean, std = self._moments()
        return LatentStats(mean.float(), std.float())

    def summary(self) -> dict[str, Any]:
        """The released JSON entry: pooled scalars and ``per_channel`` lists."""
        mean_c, std_c = self._moments()
        n = self.count * self.channels
        total = float(self.sum.sum())
        mean = total / n
        var = max(float(self.sumsq.sum()) / n - mean * mean, 0.0)
        return {
            "count": n,
            "mean": mean,
            "std": math.sqrt(var),
            "min": float(self.min.min()),
            "max": float(self.max.max()),
            "per_channel": {
                "count": self.count,
                "mean": mean_c.tolist(),
                "std": std_c.tolist(),
                "min": self.min.tolist(),
                "max": self.max.tolist(),
            },
        }


def _write(path: str | Path, entries: dict[str, Any], meta: dict[str, Any]) -> None:
    out: dict[str, Any] = {"meta": meta, **entries}
    z_all = entries.get("z_all", {})
    if "std" in z_all:
        out["suggested_latent_scale"] = 1.0 / z_all["std"] if z_all["std"] > 0 else None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")


def write_latent_stats_json(
    path: str | Path,
    accumulators: dict[str, LatentStatsAccumulator],
    meta: dict[str, Any] | None = None,
) -> None:
    """Write ``{"z_hist": ..., "z_fut": ..., "z_all": ...}`` in the released schema."""
    entries = {key: acc.summary() for key, acc in accumulators.items()}
    channels = {acc.channels for acc in accumulators.values()}
    _write(path, entries, {"latent_channels": min(channels) if channels else 0, **(meta or {})})
