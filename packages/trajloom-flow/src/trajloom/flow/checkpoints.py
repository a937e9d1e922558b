"""Finding trained sets and released checkpoints on disk, and running a pipeline on arrays.

Where a checkpoint is found:

* a trained-set folder: it holds ``pipeline.json`` (``TrajLoomPipeline.save_pretrained``);
* a run folder of ``apps/train``: the trained set inside it (searched up to three levels
  down; with several, one named ``trained`` (what apps/train writes), ``final``,
  ``export``, ``trained_set`` or ``pipeline`` wins, else the most recently written one);
* the authors' released files anywhere under a folder: configs
  ``trajloom_vae_config.json``, ``trajloom_generator_config.json``,
  ``vae_latent_stats.json``, optionally ``vis_predictor_config.json``, and ``.pt``
  checkpoints told apart by name (``*vae*``, ``*vis*``, the generator the remaining one).

Errors are :class:`CheckpointSpecError` (a ``ValueError``) with a message that says what
was found and what to give instead; apps re-raise them as their own error types.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from trajloom.flow.pipeline import TrajLoomPipeline

__all__ = [
    "PREFERRED_NAMES",
    "CheckpointSpecError",
    "NoTrainedSetError",
    "ReleasedFiles",
    "find_released_files",
    "find_trained_set",
    "forecast_arrays",
    "resolve_device",
]

PREFERRED_NAMES = ("trained", "final", "export", "trained_set", "pipeline")
"""Folder names preferred when a run folder holds several trained sets."""


class CheckpointSpecError(ValueError):
    """A checkpoint location that holds no loadable trained set or released files."""


class NoTrainedSetError(CheckpointSpecError):
    """A folder (or a path that is no folder) without ``pipeline.json`` in it or below it."""


@dataclass(frozen=True)
class ReleasedFiles:
    """The authors' released configs and checkpoints (keywords of ``from_released``).

    ``vis_ckpt`` and ``vis_cfg`` are both set or both ``None``: a visibility checkpoint
    without its config (or the reverse) is dropped.
    """

    vae_ckpt: Path
    vae_cfg: Path
    gen_ckpt: Path
    gen_cfg: Path
    stats_json: Path
    vis_ckpt: Path | None = None
    vis_cfg: Path | None = None

    def as_kwargs(self) -> dict[str, Path | None]:
        """The files as keyword arguments of ``TrajLoomPipeline.from_released``."""
        return asdict(self)


def resolve_device(name: str) -> torch.device:
    """The device to load a checkpoint on: ``auto`` is the GPU when one is present, else
    the CPU; otherwise a torch device name.

    Raises :class:`CheckpointSpecError` for a name torch does not know, or ``cuda`` without
    a CUDA device.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise CheckpointSpecError(
            f"--device {name!r}: not a device ({err}); use auto, cpu or cuda"
        ) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointSpecError(f"--device {name}: no CUDA device is available; use auto or cpu")
    return device


def find_trained_set(folder: Path) -> Path:
    """The trained-set folder of ``folder``: itself, or the one inside a run folder.

    Raises :class:`NoTrainedSetError` when ``folder`` does not exist, is a file, or holds
    no ``pipeline.json`` up to three levels down (the message says what it holds instead:
    a single model, or ``.pt`` files of the authors).
    """
    folder = Path(folder)
    if not folder.exists():
        raise NoTrainedSetError(f"checkpoint {folder} does not exist")
    if folder.is_file():
        raise NoTrainedSetError(
            f"checkpoint {folder} is a file; give a trained-set folder (with pipeline.json), "
            "a run folder of apps/train, or released:DIR for the authors' checkpoints"
        )
    if (folder / "pipeline.json").is_file():
        return folder
    found = [
        p.parent for depth in ("*/", "*/*/", "*/*/*/") for p in folder.glob(f"{depth}pipeline.json")
    ]
    if found:
        pool = [p for p in found if p.name in PREFERRED_NAMES] or found
        return max(pool, key=lambda p: (p / "pipeline.json").stat().st_mtime)
    if (folder / "model.safetensors").is_file():
        raise NoTrainedSetError(
            f"checkpoint {folder} holds a single model (model.safetensors + config.json: a VAE "
            "or generator checkpoint), not a trained set; export the trained set (apps/train, "
            "or TrajLoomPipeline.save_pretrained) and give that folder"
        )
    if any(folder.glob("*.pt")):
        raise NoTrainedSetError(
            f"checkpoint {folder} holds .pt files: for the authors' checkpoints write "
            f"released:{folder}"
        )
    raise NoTrainedSetError(
        f"checkpoint {folder} holds no trained set (no pipeline.json in it or below it); give "
        "the folder apps/train exported"
    )


def _one(root: Path, name: str, required: bool = True) -> Path | None:
    matches = sorted(root.rglob(name))
    if not matches:
        if required:
            raise CheckpointSpecError(f"released:{root}: {name} not found under {root}")
        return None
    return matches[0]


def find_released_files(root: Path) -> ReleasedFiles:
    """The authors' configs and ``.pt`` checkpoints anywhere under ``root``.

    Raises :class:`CheckpointSpecError` when ``root`` is no folder, a required config is
    missing, or the ``.pt`` files are not one VAE (name with ``vae``), one generator and at
    most one visibility head (name with ``vis``).
    """
    root = Path(root)
    if not root.is_dir():
        raise CheckpointSpecError(f"released:{root}: not a folder")
    vae_cfg = _one(root, "trajloom_vae_config.json")
    gen_cfg = _one(root, "trajloom_generator_config.json")
    stats_json = _one(root, "vae_latent_stats.json")
    vis_cfg = _one(root, "vis_predictor_config.json", required=False)
    pts = sorted(root.rglob("*.pt"))
    vae = [p for p in pts if "vae" in p.name.lower()]
    vis = [p for p in pts if "vis" in p.name.lower() and p not in vae]
    gen = [p for p in pts if p not in vae and p not in vis]
    if len(vae) != 1 or len(gen) != 1 or len(vis) > 1:
        raise CheckpointSpecError(
            f"released:{root}: expected one VAE .pt (name with 'vae'), one generator .pt and at "
            f"most one visibility .pt (name with 'vis'); found {[p.name for p in pts]}"
        )
    vis_ckpt = vis[0] if vis else None
    if (vis_ckpt is None) != (vis_cfg is None):
        vis_ckpt = vis_cfg = None
    assert vae_cfg is not None and gen_cfg is not None and stats_json is not None
    return ReleasedFiles(
        vae_ckpt=vae[0],
        vae_cfg=vae_cfg,
        gen_ckpt=gen[0],
        gen_cfg=gen_cfg,
        stats_json=stats_json,
        vis_ckpt=vis_ckpt,
        vis_cfg=vis_cfg,
    )


def forecast_arrays(
    pipe: TrajLoomPipeline,
    hist_tracks: np.ndarray,
    hist_vis: np.ndarray,
    *,
    frames: np.ndarray | None,
    caption: str,
    num_samples: int,
    solver: str,
    steps: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Run ``pipe`` on numpy history arrays of one clip; numpy futures back.

    ``frames`` are used only when the pipeline has a video encoder and its generator is
    video-conditioned; ``caption`` only when non-empty and the pipeline has a text encoder.
    Returns ``(tracks, visibility, visibility probability or None)`` of the first (only)
    clip, each with the samples on the leading axis.
    """
    use_frames = (
        frames is not None
        and pipe.video_encoder is not None
        and pipe.generator.config.use_video_cond
    )
    use_text = bool(caption) and pipe.text_encoder is not None
    out: Any = pipe(
        torch.from_numpy(np.ascontiguousarray(hist_tracks, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(hist_vis, dtype=bool)),
        frames=torch.from_numpy(np.ascontiguousarray(frames)) if use_frames else None,
        caption=caption if use_text else None,
        num_samples=num_samples,
        solver=solver,
        steps=steps,
        seed=seed,
    )
    prob = out.visibility_prob
    return (
        out.tracks[0].cpu().numpy(),
        out.visibility[0].cpu().numpy(),
        None if prob is None else prob[0].float().cpu().numpy(),
    )
