"""Training checkpoints: atomic folders, keep the last k, resume exactly.

A checkpoint is ``<stage>/checkpoints/step-00000100/`` with ``model.safetensors`` (the
trained module), ``ema.safetensors`` (EMA weights, when the stage keeps them) and
``train_state.pt`` (step, optimizer state, RNG states, data position; only tensors and
plain Python values, so it loads with ``torch.load(..., weights_only=True)``). The folder
is written under a temporary name and renamed into place, so a killed process leaves
either the previous checkpoint or the new one, never half of one. Resuming skips a
checkpoint that cannot be read (a damaged disk, a truncated copy) with a warning and takes
the newest intact one, and removes the temporary folders a killed process left behind.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from trajloom.data.outputs import atomic_write_text
from trajloom_train.state import TrainState

__all__ = [
    "Checkpoint",
    "atomic_write_text",
    "capture_rng",
    "checkpoint_step",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "remove_stale_temporaries",
    "restore_checkpoint",
    "restore_rng",
    "restore_state",
    "save_checkpoint",
    "save_state",
]

_STEP_DIR = re.compile(r"^step-(\d{8})$")


def capture_rng() -> dict[str, Any]:
    """The torch (CPU and CUDA), numpy and Python RNG states as tensors and plain values."""
    # The legacy global numpy RNG is what third-party code draws from: save it as it is.
    np_state = np.random.get_state()  # noqa: NPY002
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(np_state[0]),
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            n["kind"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


class Checkpoint:
    """A loaded checkpoint: ``model``, ``ema`` (or None) state dicts and ``train_state``."""

    def __init__(
        self,
        path: Path,
        model: dict[str, torch.Tensor],
        ema: dict[str, torch.Tensor] | None,
        train_state: dict[str, Any],
    ) -> None:
        self.path = path
        self.model = model
        self.ema = ema
        self.train_state = train_state

    @property
    def step(self) -> int:
        return int(self.train_state["step"])


def list_checkpoints(stage_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders of a stage, oldest first."""
    root = Path(stage_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def checkpoint_step(path: str | Path) -> int:
    """The step of a checkpoint folder, from its name."""
    match = _STEP_DIR.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not a checkpoint folder (step-XXXXXXXX)")
    return int(match.group(1))


def latest_checkpoint(stage_dir: str | Path) -> Path | None:
    found = list_checkpoints(stage_dir)
    return found[-1] if found else None


def save_checkpoint(
    stage_dir: str | Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    ema_state: dict[str, torch.Tensor] | None,
    train_state: dict[str, Any],
    *,
    keep_last: int,
) -> Path:
    """Write checkpoint ``step`` atomically and delete all but the newest ``keep_last``."""
    root = Path(stage_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f".step-{step:08d}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(_tensors(model_state), str(tmp / "model.safetensors"))
    if ema_state is not None:
        save_file(_tensors(ema_state), str(tmp / "ema.safetensors"))
    torch.save({**train_state, "step": int(step)}, tmp / "train_state.pt")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(stage_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> Checkpoint:
    """Read a checkpoint folder written by :func:`save_checkpoint` (no pickled code)."""
    path = Path(path)
    model = load_file(str(path / "model.safetensors"), device=str(device))
    ema_file = path / "ema.safetensors"
    ema = load_file(str(ema_file), device=str(device)) if ema_file.is_file() else None
    train_state = torch.load(path / "train_state.pt", map_location="cpu", weights_only=True)
    return Checkpoint(path, model, ema, train_state)


def save_state(stage_dir: str | Path, state: TrainState, *, keep_last: int) -> Path:
    """Checkpoint ``state`` (weights, EMA, optimizer, RNG states) at its step."""
    return save_checkpoint(
        stage_dir,
        state.step,
        state.model.state_dict(),
        state.ema.state_dict() if state.ema is not None else None,
        {"optimizer": state.optimizer.state_dict(), "rng": capture_rng()},
        keep_last=keep_last,
    )


def remove_stale_temporaries(stage_dir: str | Path) -> list[Path]:
    """Delete the half-written checkpoint folders (``.step-*.tmp-PID``) of dead writers."""
    root = Path(stage_dir) / "checkpoints"
    removed = []
    for tmp in root.glob(".step-*.tmp-*") if root.is_dir() else []:
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue  # another live process is writing it (the run lock prevents this)
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# What a damaged checkpoint raises while it is read (never while it is applied).
_UNREADABLE = (
    OSError,
    RuntimeError,
    SafetensorError,
    EOFError,
    KeyError,
    ValueError,
    pickle.UnpicklingError,
)


def _apply(state: TrainState, ckpt: Checkpoint) -> None:
    state.model.load_state_dict(ckpt.model, strict=True)
    state.optimizer.load_state_dict(ckpt.train_state["optimizer"])
    if state.ema is not None:
        if ckpt.ema is None:
            raise ValueError(f"{ckpt.path} has no EMA weights but the stage keeps an EMA")
        state.ema.load_state_dict(ckpt.ema)
    restore_rng(ckpt.train_state["rng"])
    state.step = ckpt.step


def restore_checkpoint(
    state: TrainState, path: str | Path, device: torch.device | str = "cpu"
) -> Path:
    """Load the checkpoint folder ``path`` into ``state`` (and the RNGs); no fallback.

    What the processes of a job other than rank 0 do: rank 0 chooses the checkpoint
    (:func:`restore_state`, which skips damaged ones) and every process loads that one.
    """
    path = Path(path)
    try:
        ckpt = load_checkpoint(path, device=device)
        ckpt.step  # noqa: B018 - the step must be readable too
    except _UNREADABLE as err:
        raise ValueError(
            f"{path}: cannot read the checkpoint rank 0 resumes from ({type(err).__name__}: "
            f"{err}); every process must see the run folder (a shared file system)"
        ) from None
    _apply(state, ckpt)
    return path


def restore_state(
    state: TrainState, stage_dir: str | Path, device: torch.device | str = "cpu"
) -> Path | None:
    """Load the stage's newest intact checkpoint into ``state`` (and the RNGs).

    A checkpoint that cannot be read is skipped with a warning naming it and the error;
    returns the checkpoint used, or None when there is none. Raises ValueError when every
    checkpoint is damaged.
    """
    remove_stale_temporaries(stage_dir)
    found = list_checkpoints(stage_dir)
    for path in reversed(found):
        try:
            ckpt = load_checkpoint(path, device=device)
            ckpt.step  # noqa: B018 - the step must be readable too
        except _UNREADABLE as err:
            warnings.warn(
                f"{path}: damaged checkpoint skipped ({type(err).__name__}: {err}); "
                "trying the previous one",
                stacklevel=2,
            )
            continue
        _apply(state, ckpt)
        return path
    if found:
        raise ValueError(
            f"every checkpoint in {Path(stage_dir) / 'checkpoints'} is damaged "
            f"({', '.join(p.name for p in found)}); delete that folder to restart the stage"
        )
    return None
