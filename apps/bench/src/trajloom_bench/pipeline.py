"""Trained sets and released checkpoints as bench methods, through ``TrajLoomPipeline``.

Same rules as the sample app: a trained-set folder holds ``pipeline.json``; a run folder
of ``apps/train`` holds one up to three levels down (``trained`` - what apps/train
writes - ``final``, ``export`` or ``trained_set`` preferred, else the newest);
``released:DIR`` holds the authors' configs and ``.pt`` files (``*vae*``, ``*vis*``, the
generator the remaining one). A WHN-style trained set
(``PipelineConfig(mode="whn")``) is a trained-set folder like any other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trajloom.flow.pipeline import TrajLoomPipeline
from trajloom_bench.methods import Forecast, MethodError, MethodSpec

__all__ = ["PipelineMethod", "find_released_files", "find_trained_set", "load_pipeline_forecaster"]

_PREFERRED = ("trained", "final", "export", "trained_set", "pipeline")


def find_trained_set(folder: Path) -> Path:
    """The trained-set folder of ``folder`` (itself or inside a run folder)."""
    if (folder / "pipeline.json").is_file():
        return folder
    found = [
        p.parent for depth in ("*/", "*/*/", "*/*/*/") for p in folder.glob(f"{depth}pipeline.json")
    ]
    if not found:
        raise MethodError(
            f"{folder} holds no trained set (no pipeline.json in it or below it); give the "
            "folder apps/train exported, released:DIR, vae:DIR or runs:DIR"
        )
    pool = [p for p in found if p.name in _PREFERRED] or found
    return max(pool, key=lambda p: (p / "pipeline.json").stat().st_mtime)


def _one(root: Path, name: str, required: bool = True) -> Path | None:
    matches = sorted(root.rglob(name))
    if not matches and required:
        raise MethodError(f"released:{root}: {name} not found under {root}")
    return matches[0] if matches else None


def find_released_files(root: Path) -> dict[str, Path | None]:
    """The released configs and checkpoints under ``root``."""
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
        raise MethodError(
            f"released:{root}: expected one VAE .pt (name with 'vae'), one generator .pt and at "
            f"most one visibility .pt (name with 'vis'); found {[p.name for p in pts]}"
        )
    files.update(vae_ckpt=vae[0], gen_ckpt=gen[0], vis_ckpt=vis[0] if vis else None)
    if (files["vis_ckpt"] is None) != (files["vis_cfg"] is None):
        files["vis_ckpt"] = files["vis_cfg"] = None
    return files


class PipelineMethod:
    """A ``TrajLoomPipeline`` as a bench forecaster (its own grid and window)."""

    def __init__(self, pipe: TrajLoomPipeline, *, solver: str, steps: int) -> None:
        self.pipe = pipe
        self.solver = solver
        self.steps = steps
        self.grid = pipe.grid
        self.history = pipe.num_frames
        self.future = pipe.num_frames
        self.wants_frames = pipe.video_encoder is not None and pipe.generator.config.use_video_cond

    def forecast(
        self,
        hist_tracks: np.ndarray,
        hist_vis: np.ndarray,
        *,
        future: int,
        frames: np.ndarray | None,
        caption: str,
        num_samples: int,
        seed: int,
        gt_tracks: np.ndarray | None = None,
        gt_vis: np.ndarray | None = None,
    ) -> Forecast:
        use_frames = frames is not None and self.wants_frames
        out = self.pipe(
            torch.from_numpy(np.ascontiguousarray(hist_tracks, dtype=np.float32)),
            torch.from_numpy(np.ascontiguousarray(hist_vis, dtype=bool)),
            frames=torch.from_numpy(np.ascontiguousarray(frames)) if use_frames else None,
            caption=caption if caption and self.pipe.text_encoder is not None else None,
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


def load_pipeline_forecaster(
    spec: MethodSpec, device: torch.device, *, solver: str, steps: int
) -> PipelineMethod:
    """Load a ``trained`` or ``released`` method on ``device``."""
    if spec.kind == "baseline":
        raise MethodError(
            f"method {spec.name}: the WHN-style baseline is a trained configuration "
            "(PipelineConfig(mode='whn')); train it with apps/train and give its trained-set "
            "folder as the SPEC"
        )
    try:
        if spec.kind == "released":
            pipe = TrajLoomPipeline.from_released(
                **find_released_files(Path(spec.target)), device=device
            )
        else:
            pipe = TrajLoomPipeline.from_pretrained(
                find_trained_set(Path(spec.target)), device=device
            )
    except (FileNotFoundError, KeyError, RuntimeError) as err:
        raise MethodError(f"method {spec.name}: {spec.target} cannot be loaded ({err})") from err
    return PipelineMethod(pipe, solver=solver, steps=steps)
