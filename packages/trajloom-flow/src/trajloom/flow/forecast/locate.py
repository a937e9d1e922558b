"""Where checkpoints are on disk: trained sets, the authors' released files, VAE folders.

* A trained-set folder holds ``pipeline.json`` (``TrajLoomPipeline.save_pretrained``).
* A run folder of ``apps/train`` holds its trained set up to three levels down; with
  several, one named as in :data:`PREFERRED_NAMES` wins (``trained`` is what apps/train
  writes), else the most recently written one.
* The authors' released files lie anywhere under a folder: configs
  ``trajloom_vae_config.json``, ``trajloom_generator_config.json``,
  ``vae_latent_stats.json``, optionally ``vis_predictor_config.json``, and ``.pt``
  checkpoints told apart by name (``*vae*``, ``*vis*``, the generator the remaining one).
* A VAE folder holds ``model.safetensors`` and a VAE ``config.json``
  (``trajloom.vae.save_pretrained``); a trained set's ``vae/`` folder is one.

Every miss raises :class:`~trajloom.flow.forecast.base.ForecastError` saying what was
found and what to give instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trajloom.flow.forecast.base import ForecastError

__all__ = [
    "PREFERRED_NAMES",
    "ReleasedFiles",
    "find_released_files",
    "find_trained_set",
    "find_vae_folder",
]

PREFERRED_NAMES = ("trained", "final", "export", "trained_set", "pipeline")
"""Folder names preferred when a run folder holds several trained sets."""


@dataclass(frozen=True)
class ReleasedFiles:
    """The authors' released configs and checkpoints (the arguments of ``from_released``).

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


def find_trained_set(folder: Path) -> Path:
    """The trained-set folder of ``folder``: itself, or the one inside a run folder.

    Raises :class:`ForecastError` when ``folder`` does not exist, is a file, or holds no
    ``pipeline.json`` up to three levels down (the message says what it holds instead: a
    single model, or ``.pt`` files of the authors).
    """
    folder = Path(folder)
    if not folder.exists():
        raise ForecastError(f"checkpoint {folder} does not exist")
    if folder.is_file():
        raise ForecastError(
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
        raise ForecastError(
            f"checkpoint {folder} holds a single model (model.safetensors + config.json: a VAE "
            "or generator checkpoint), not a trained set; export the trained set (apps/train, "
            "or TrajLoomPipeline.save_pretrained) and give that folder, or vae:DIR to "
            "reconstruct with a VAE"
        )
    if any(folder.glob("*.pt")):
        raise ForecastError(
            f"checkpoint {folder} holds .pt files: for the authors' checkpoints write "
            f"released:{folder}"
        )
    raise ForecastError(
        f"checkpoint {folder} holds no trained set (no pipeline.json in it or below it); give "
        "the folder apps/train exported"
    )


def _one(root: Path, name: str) -> Path | None:
    matches = sorted(root.rglob(name))
    return matches[0] if matches else None


def _required(root: Path, name: str) -> Path:
    found = _one(root, name)
    if found is None:
        raise ForecastError(f"released:{root}: {name} not found under {root}")
    return found


def find_released_files(root: Path) -> ReleasedFiles:
    """The authors' configs and ``.pt`` checkpoints anywhere under ``root``.

    Raises :class:`ForecastError` when ``root`` is no folder, a required config is
    missing, or the ``.pt`` files are not one VAE (name with ``vae``), one generator and at
    most one visibility head (name with ``vis``).
    """
    root = Path(root)
    if not root.is_dir():
        raise ForecastError(f"released:{root}: not a folder")
    vae_cfg = _required(root, "trajloom_vae_config.json")
    gen_cfg = _required(root, "trajloom_generator_config.json")
    stats_json = _required(root, "vae_latent_stats.json")
    vis_cfg = _one(root, "vis_predictor_config.json")
    pts = sorted(root.rglob("*.pt"))
    vae = [p for p in pts if "vae" in p.name.lower()]
    vis = [p for p in pts if "vis" in p.name.lower() and p not in vae]
    gen = [p for p in pts if p not in vae and p not in vis]
    if len(vae) != 1 or len(gen) != 1 or len(vis) > 1:
        raise ForecastError(
            f"released:{root}: expected one VAE .pt (name with 'vae'), one generator .pt and at "
            f"most one visibility .pt (name with 'vis'); found {[p.name for p in pts]}"
        )
    vis_ckpt = vis[0] if vis else None
    if vis_ckpt is None or vis_cfg is None:
        vis_ckpt = vis_cfg = None
    return ReleasedFiles(
        vae_ckpt=vae[0],
        vae_cfg=vae_cfg,
        gen_ckpt=gen[0],
        gen_cfg=gen_cfg,
        stats_json=stats_json,
        vis_ckpt=vis_ckpt,
        vis_cfg=vis_cfg,
    )


def find_vae_folder(target: Path) -> Path:
    """A trajectory-VAE folder: ``target`` itself or the ``vae`` folder of a trained set
    (``target/vae``, or ``target/*/vae`` for a run folder, the first in name order)."""
    target = Path(target)
    for candidate in (target, target / "vae", *sorted(target.glob("*/vae"))):
        config = candidate / "config.json"
        if (candidate / "model.safetensors").is_file() and config.is_file():
            text = config.read_text()
            if '"latent_channels"' in text and '"encoder_depth"' in text:
                return candidate
    raise ForecastError(
        f"vae:{target}: holds no trajectory-VAE checkpoint (model.safetensors + a VAE "
        "config.json); give a folder written by trajloom.vae.save_pretrained or a trained set"
    )
