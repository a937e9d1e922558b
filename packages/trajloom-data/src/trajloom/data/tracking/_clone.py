"""Loading a learned tracker from a user's local clone and weights file; never downloads."""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = [
    "TrackerError",
    "check_clone",
    "check_vis_threshold",
    "check_weights",
    "clone_imports",
    "import_from_clone",
    "load_weights",
    "place_model",
]


class TrackerError(ValueError):
    """A tracker could not be built or run: one line naming the tracker, the input and the fix.

    A ``ValueError`` so that callers that already report bad input (the apps' CLIs)
    report this too, without a traceback.
    """


def check_clone(repo_path: str | Path, required: Sequence[str], backend: str, url: str) -> Path:
    """The clone's root, after checking that it holds every file in ``required``."""
    root = Path(repo_path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"{backend}: repo_path {str(root)!r} is not a folder; clone {url} there (this "
            "package never downloads code or weights) and pass its path as repo_path"
        )
    missing = [rel for rel in required if not (root / rel).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{backend}: repo_path {str(root)!r} lacks {', '.join(missing)}; is it a clone of "
            f"{url} at a recent commit?"
        )
    return root


def check_weights(weights_path: str | Path, backend: str, hint: str) -> Path:
    """The weights file, after checking that it exists and is not empty."""
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"{backend}: weights_path {str(path)!r} is not a file; download {hint} yourself "
            "(this package never downloads weights) and pass its path as weights_path"
        )
    if path.stat().st_size == 0:
        raise ValueError(f"{backend}: weights_path {str(path)!r} is empty")
    return path


@contextlib.contextmanager
def clone_imports(root: Path) -> Iterator[None]:
    """Make the clone's top-level packages importable inside the block only.

    Research repositories import their own packages by top-level names (``nets``,
    ``utils``, ``cotracker``). The clone goes first on ``sys.path`` for the block, and
    on exit both the path entry and the modules imported from the clone are removed,
    so that a clone's ``utils`` never shadows another package's afterwards. Objects
    built inside keep working: they hold references to their own modules.
    """
    entry = str(root.resolve())
    before = set(sys.modules)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)
        for name in set(sys.modules) - before:
            file = getattr(sys.modules[name], "__file__", None) or ""
            if file.startswith(entry):
                del sys.modules[name]


@contextlib.contextmanager
def kept_rng() -> Iterator[None]:
    """Restore torch's global RNG state (CPU, and CUDA when initialized) after the block.

    Research code seeds at import time (co-tracker's model modules call
    ``torch.manual_seed(0)``); importing it must not reset the caller's stream.
    """
    import torch

    cpu = torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        torch.random.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def import_from_clone(root: Path, module: str) -> ModuleType:
    """Import ``module`` (dotted) from the clone at ``root``; see :func:`clone_imports`.

    The caller's torch RNG state is kept (see :func:`kept_rng`).
    """
    with clone_imports(root), kept_rng():
        return importlib.import_module(module)


def load_weights(path: Path, key: str | None = "model") -> dict:
    """A state dict from ``.pth``/``.pt`` (``torch.load(weights_only=True)``) or ``.safetensors``.

    Checkpoints that wrap the state dict under ``key`` (e.g. ``{"model": ...}``) are
    unwrapped.
    """
    import torch

    state: object
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for corrupt or pickled files
            raise ValueError(
                f"{path}: cannot be loaded as plain weights with torch.load(weights_only=True) "
                f"({type(err).__name__}: {err}); it may be corrupt or hold arbitrary objects"
            ) from err
    if (
        key is not None
        and isinstance(state, dict)
        and key in state
        and isinstance(state[key], dict)
    ):
        state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def check_vis_threshold(config_name: str, value: float) -> None:
    """Raise ``ValueError`` unless a config's ``vis_threshold`` lies in ``[0, 1]``."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{config_name}.vis_threshold must be in [0, 1], got {value}")


def place_model(model: Any, weights: Path, device: str) -> tuple[Any, Any]:
    """Load ``weights`` into ``model`` (strict), move it to ``device`` for inference.

    ``device`` is a torch device name or ``"auto"`` (cuda when available, else cpu).
    Returns the model (eval mode, no gradients) and its ``torch.device``.
    """
    import torch

    model.load_state_dict(load_weights(Path(weights)), strict=True)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_device = torch.device(device)
    return model.to(torch_device).eval().requires_grad_(False), torch_device
