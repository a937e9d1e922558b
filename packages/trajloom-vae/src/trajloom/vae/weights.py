"""Configs checked against weights before anything is allocated.

A config and a weights file come from one folder but can disagree (an edited
``config.json``, a file from another run, weights cast to int8). Building the model of a
config is the expensive step: ``depth: 20000`` allocates gigabytes before a strict
``load_state_dict`` could say the keys do not match. :func:`check_weights` compares the
state the config implies with the weights' key set, shapes and dtypes first:

* the weights' side is read from the safetensors header only (:func:`safetensors_header`:
  names, shapes, dtypes; no tensor is read) or from a loaded state dict;
* the config's side is the model itself, built under a guard that stops the build at
  the first parameter or buffer past what the weights hold (more tensors, or more
  elements, than the file plus the model's few non-persistent buffers): the guard runs
  when a tensor is registered, before it is initialized, so a config of 20000 or 10^7
  blocks, or of a width far past the weights, fails in milliseconds with its memory
  never touched. (Building on the ``meta`` device would do the same but imports torch's
  reference decompositions, seconds per process.)
* dtypes: a floating parameter must be stored as a float (F16, BF16, F32, F64: exports
  may be cast), any other tensor in its own dtype; int8 weights are refused.

The one-line :class:`WeightsMismatch` names the file, what differs and what to do.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import safe_open
from torch.nn.modules.module import (
    register_module_buffer_registration_hook,
    register_module_parameter_registration_hook,
)

__all__ = ["WeightsMismatch", "build_checked", "safetensors_header", "state_specs"]

M = TypeVar("M", bound=torch.nn.Module)

#: A tensor's description: its shape and dtype name (safetensors' names: F32, BF16, I8...).
TensorSpec = tuple[tuple[int, ...], str]

_FLOATS = frozenset({"F16", "BF16", "F32", "F64"})
_TORCH_NAMES = {
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float32: "F32",
    torch.float64: "F64",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.int16: "I16",
    torch.int32: "I32",
    torch.int64: "I64",
    torch.bool: "BOOL",
}
#: Tensors and elements a model may register beyond its saved state (non-persistent
#: buffers such as anchors and position tables).
_SLACK_TENSORS = 64
_SLACK_ELEMENTS = 1 << 24


class WeightsMismatch(ValueError):
    """Weights that do not fit their config; the message names the file and the first
    differences."""


class _TooManyTensors(Exception):
    pass


def _dtype_name(dtype: torch.dtype) -> str:
    return _TORCH_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def safetensors_header(path: str | Path) -> dict[str, TensorSpec]:
    """Names, shapes and dtypes of the tensors of a safetensors file, from its header."""
    with safe_open(str(path), framework="pt") as f:
        out = {}
        for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
            part = f.get_slice(key)
            out[key] = (tuple(int(d) for d in part.get_shape()), str(part.get_dtype()))
        return out


def state_specs(state: Mapping[str, torch.Tensor]) -> dict[str, TensorSpec]:
    """:data:`TensorSpec` of every tensor of a loaded state dict."""
    return {k: (tuple(v.shape), _dtype_name(v.dtype)) for k, v in state.items()}


@contextlib.contextmanager
def _at_most(tensors: int, elements: int) -> Iterator[None]:
    """Stop this thread's module construction at the first parameter or buffer past
    ``tensors`` tensors or ``elements`` elements in all (other threads are not counted)."""
    thread = threading.get_ident()
    seen = [0, 0]

    def hook(_module: object, _name: str, tensor: torch.Tensor | None) -> None:
        if threading.get_ident() != thread or tensor is None:
            return
        seen[0] += 1
        seen[1] += tensor.numel()
        if seen[0] > tensors or seen[1] > elements:
            raise _TooManyTensors

    handles = [
        register_module_parameter_registration_hook(hook),
        register_module_buffer_registration_hook(hook),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _first(names: list[str], count: int = 3) -> str:
    shown = ", ".join(names[:count])
    return shown + (f" and {len(names) - count} more" if len(names) > count else "")


def build_checked(
    build: Callable[[], M],
    weights: Mapping[str, TensorSpec],
    where: str,
    config_name: str = "its config",
) -> M:
    """``build()`` when the model it makes has exactly the keys, shapes and (kinds of)
    dtypes of ``weights`` (:func:`safetensors_header` or :func:`state_specs`), else
    :class:`WeightsMismatch` naming ``where`` and ``config_name``. A config implying more
    tensors or elements than the weights hold is stopped while it is built, before its
    memory is touched."""
    total = sum(math.prod(shape) for shape, _ in weights.values())
    try:
        with _at_most(2 * len(weights) + _SLACK_TENSORS, 2 * total + _SLACK_ELEMENTS):
            model = build()
    except (_TooManyTensors, MemoryError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and "alloc" not in str(err):
            raise
        raise WeightsMismatch(
            f"{where}: {config_name} describes a far larger model than the weights hold "
            f"({len(weights)} tensors, {total} numbers); it does not belong to these "
            "weights: restore it"
        ) from err
    state = model.state_dict()
    floats = {k for k, v in state.items() if v.is_floating_point()}
    problems = _differences(state_specs(state), floats, weights)
    if problems:
        raise WeightsMismatch(
            f"{where}: weights do not match {config_name}: {'; '.join(problems)}; use the "
            "config saved with these weights (or the weights of this config)"
        )
    return model


def _differences(
    expected: Mapping[str, TensorSpec], floats: set[str], weights: Mapping[str, TensorSpec]
) -> list[str]:
    """What differs between the model's state and the weights, first names of each kind."""
    problems = []
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing:
        problems.append(f"missing keys: {len(missing)} ({_first(missing)})")
    if unexpected:
        problems.append(f"unexpected keys: {len(unexpected)} ({_first(unexpected)})")
    common = sorted(set(expected) & set(weights))
    shapes = [k for k in common if expected[k][0] != weights[k][0]]
    if shapes:
        k = shapes[0]
        problems.append(
            f"{len(shapes)} shapes differ ({k}: {list(weights[k][0])} in the weights, "
            f"{list(expected[k][0])} by the config)"
        )
    dtypes = [
        k
        for k in common
        if (weights[k][1] not in _FLOATS if k in floats else weights[k][1] != expected[k][1])
    ]
    if dtypes:
        k = dtypes[0]
        problems.append(
            f"{len(dtypes)} dtypes differ ({k}: {weights[k][1]} in the weights, "
            f"{'a float' if k in floats else expected[k][1]} by the config)"
        )
    return problems
