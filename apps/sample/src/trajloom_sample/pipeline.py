"""Trained sets and released checkpoints as forecasters, through ``TrajLoomPipeline``.

Where a checkpoint is found:

* a trained-set folder: it holds ``pipeline.json`` (``TrajLoomPipeline.save_pretrained``);
* a run folder of ``apps/train``: the trained set inside it (searched up to three levels
  down; with several, one named ``trained`` (what apps/train writes), ``final``,
  ``export`` or ``trained_set`` wins, else the most recently written one);
* ``released:DIR``: the authors' files anywhere under DIR — configs
  ``trajloom_vae_config.json``, ``trajloom_generator_config.json``,
  ``vae_latent_stats.json``, optionally ``vis_predictor_config.json``, and ``.pt``
  checkpoints told apart by name (``*vae*``, ``*vis*``, the generator the remaining one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from trajloom.flow.pipeline import TrajLoomPipeline
from trajloom_sample.model import CheckpointError, Forecast

__all__ = [
    "PipelineForecaster",
    "find_released_files",
    "find_trained_set",
    "load_pipeline_forecaster",
]

_PREFERRED = ("trained", "final", "export", "trained_set", "pipeline")


def find_trained_set(folder: Path) -> Path:
    """The trained-set folder of ``folder`` (itself or inside a run folder)."""
    if not folder.exists():
        raise CheckpointError(f"checkpoint {folder} does not exist")
    if folder.is_file():
        raise CheckpointError(
            f"checkpoint {folder} is a file; give a trained-set folder (with pipeline.json), "
            "a run folder of apps/train, or released:DIR for the authors' checkpoints"
        )
    if (folder / "pipeline.json").is_file():
        return folder
    found = [
        p.parent for depth in ("*/", "*/*/", "*/*/*/") for p in folder.glob(f"{depth}pipeline.json")
    ]
    if found:
        preferred = [p for p in found if p.name in _PREFERRED]
        pool = preferred or found
        return max(pool, key=lambda p: (p / "pipeline.json").stat().st_mtime)
    if (folder / "model.safetensors").is_file():
        raise CheckpointError(
            f"checkpoint {folder} holds a single model (model.safetensors + config.json: a VAE "
            "or generator checkpoint), not a trained set; export the trained set (apps/train, "
            "or TrajLoomPipeline.save_pretrained) and give that folder"
        )
    if any(folder.glob("*.pt")):
        raise CheckpointError(
            f"checkpoint {folder} holds .pt files: for the authors' checkpoints write "
            f"released:{folder}"
        )
    raise CheckpointError(
        f"checkpoint {folder} holds no trained set (no pipeline.json in it or below it); give "
        "the folder apps/train exported"
    )


def _one(root: Path, name: str, required: bool = True) -> Path | None:
    matches = sorted(root.rglob(name))
    if not matches:
        if required:
            raise CheckpointError(f"released:{root}: {name} not found under {root}")
        return None
    return matches[0]


def find_released_files(root: Path) -> dict[str, Path | None]:
    """The released configs and checkpoints under ``root`` (see the module docstring)."""
    if not root.is_dir():
        raise CheckpointError(f"released:{root}: not a folder")
    files = {
        "vae_cfg": _one(root, "trajloom_vae_config.json"),
        "gen_cfg": _one(root, "trajloom_generator_config.json"),
        "stats_json": _one(root, "vae_latent_stats.json"),
        "vis_cfg": _one(root, "vis_predictor_config.json", required=False),
    }
    pts = sorted(root.rglob("*.pt"))
    vae = [p for p in pts if "vae" in p.name.lower()]
    vis = [p for p in pts if "vis" in p.name.lower() and p not in vae]
    gen = [p for p in pts if p not in vae and p not in vis]
    if len(vae) != 1 or len(gen) != 1 or len(vis) > 1:
        raise CheckpointError(
            f"released:{root}: expected one VAE .pt (name with 'vae'), one generator .pt and at "
            f"most one visibility .pt (name with 'vis'); found {[p.name for p in pts]}"
        )
    files.update(vae_ckpt=vae[0], gen_ckpt=gen[0], vis_ckpt=vis[0] if vis else None)
    if (files["vis_ckpt"] is None) != (files["vis_cfg"] is None):
        files["vis_ckpt"] = files["vis_cfg"] = None
    return files


class PipelineForecaster:
    """A ``TrajLoomPipeline`` behind the sample app's forecaster interface."""

    def __init__(self, pipe: TrajLoomPipeline, *, solver: str, steps: int, origin: str) -> None:
        self.pipe = pipe
        self.solver = solver
        self.steps = steps
        self.origin = origin
        self.grid = pipe.grid
        self.history = pipe.num_frames
        self.future = pipe.num_frames

    def forecast(
        self,
        hist_tracks: np.ndarray,
        hist_vis: np.ndarray,
        *,
        frames: np.ndarray | None,
        caption: str,
        num_samples: int,
        seed: int,
    ) -> Forecast:
        use_frames = (
            frames is not None
            and self.pipe.video_encoder is not None
            and self.pipe.generator.config.use_video_cond
        )
        use_text = bool(caption) and self.pipe.text_encoder is not None
        out = self.pipe(
            torch.from_numpy(np.ascontiguousarray(hist_tracks, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(hist_vis, dtype=bool)),
            frames=torch.from_numpy(np.ascontiguousarray(frames)) if use_frames else None,
            caption=caption if use_text else None,
            num_samples=num_samples,
            solver=self.solver,
            steps=self.steps,
            seed=seed,
        )
        prob = out.visibility_prob
        return Forecast(
            out.tracks[0].cpu().numpy(),
            out.visibility[0].cpu().numpy(),
            None if prob is None else prob[0].float().cpu().numpy(),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.origin,
            "solver": self.solver,
            "steps": self.steps,
            "mode": self.pipe.config.mode,
            "video_context": self.pipe.video_encoder is not None,
            "text_context": self.pipe.text_encoder is not None,
            "H": self.grid.height,
            "W": self.grid.width,
        }


def load_pipeline_forecaster(
    checkpoint: str,
    device: torch.device,
    *,
    solver: str,
    steps: int,
    video_encoder: Path | None = None,
    text_encoder: Path | None = None,
) -> PipelineForecaster:
    """Load ``checkpoint`` (trained set, run folder or ``released:DIR``) on ``device``."""
    kind, colon, target = checkpoint.partition(":")
    try:
        if colon and kind == "released":
            files = find_released_files(Path(target))
            pipe = TrajLoomPipeline.from_released(
                **files, wan_vae_path=video_encoder, umt5_path=text_encoder, device=device
            )
            origin = f"released:{target}"
        else:
            folder = find_trained_set(Path(checkpoint))
            pipe = TrajLoomPipeline.from_pretrained(
                folder, device=device, wan_vae_path=video_encoder, umt5_path=text_encoder
            )
            origin = str(folder)
    except (FileNotFoundError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint {checkpoint}: cannot be loaded ({err})") from err
    return PipelineForecaster(pipe, solver=solver, steps=steps, origin=origin)
