"""Scaled dot-product attention in one place, with backend dispatch.

Every TrajLoom transformer (the VAE here, the flow generator in ``trajloom.flow``)
calls :func:`attention`, so the choice of kernel is made once per process:

* ``"xformers"``: xformers' memory-efficient attention. Optional (the ``xformers``
  extra, linux x86_64). Its PyPI wheels are built against one CUDA major version, so
  with a torch built for another the import can succeed and the kernel still fail to
  load; we therefore probe it once with a tiny real call before trusting it.
* ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention`` (flash / efficient /
  math, picked by torch).
* ``"math"``: an explicit ``softmax(q k^T * scale) v``, for reference and debugging.
* ``"auto"``: xformers on CUDA tensors when its kernels really run, otherwise SDPA.

Tensors are ``"b s h d"`` (batch, sequence, heads, head_dim), xformers' native layout.
If xformers is asked for but cannot run, a warning is emitted once and SDPA is used;
attention never fails because an optional kernel is missing.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F

__all__ = [
    "BACKENDS",
    "attention",
    "attention_backend",
    "available_attention_backends",
    "last_attention_backend",
    "set_attention_backend",
    "xformers_status",
]

BACKENDS = ("auto", "xformers", "sdpa", "math")

_state = threading.local()
_default_backend = "auto"
_xformers_probe: dict[str, str | None] = {}  # device key -> None if usable, else the reason
_warned: set[str] = set()


def _check_name(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"attention backend must be one of {BACKENDS}, got {name!r}")
    return name


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def xformers_status(device: torch.device | str | None = None) -> str | None:
    """Why xformers cannot run on ``device`` (a sentence), or None if it can.

    The first call per device imports xformers and runs one tiny attention on that
    device; the answer is cached. CPU devices always answer with a reason, since the
    memory-efficient kernels are CUDA kernels.
    """
    dev = torch.device(device if device is not None else "cpu")
    if dev.type != "cuda":
        return "xformers memory-efficient attention needs a CUDA device"
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    key = str(dev)
    if key in _xformers_probe:
        return _xformers_probe[key]
    reason: str | None = None
    try:
        import xformers.ops as xops

        probe = torch.zeros(1, 8, 1, 16, device=dev, dtype=torch.float16)
        xops.memory_efficient_attention(probe, probe, probe)
        torch.cuda.synchronize(dev)
    except ImportError as err:
        reason = f"xformers is not installed or does not import ({err})"
    except Exception as err:  # a wheel built for another CUDA fails in many ways
        reason = f"xformers kernels do not run with this torch/CUDA ({type(err).__name__}: {err})"
    _xformers_probe[key] = reason
    return reason


def available_attention_backends(device: torch.device | str | None = None) -> list[str]:
    """Backends that can run on ``device`` (default: CUDA if present, else CPU)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    names = ["auto", "sdpa", "math"]
    if xformers_status(device) is None:
        names.insert(1, "xformers")
    return names


def set_attention_backend(name: str) -> contextlib.AbstractContextManager[None]:
    """Set the process default backend; the returned object restores the old one on ``__exit__``.

    ``set_attention_backend("sdpa")`` changes it for good; ``with set_attention_backend("math"):``
    changes it for a block.
    """
    global _default_backend
    previous = _default_backend
    _default_backend = _check_name(name)

    @contextlib.contextmanager
    def _restore() -> Iterator[None]:
        global _default_backend
        try:
            yield
        finally:
            _default_backend = previous

    return _restore()


def attention_backend(name: str) -> contextlib.AbstractContextManager[None]:
    """Context manager: use backend ``name`` inside the block, then restore the previous one."""
    return set_attention_backend(name)


def last_attention_backend() -> str | None:
    """The backend that actually ran the last :func:`attention` call in this thread."""
    return getattr(_state, "last", None)


def _resolve(name: str, q: torch.Tensor, has_mask: bool) -> str:
    if name == "math" or name == "sdpa":
        return name
    if has_mask:
        # xformers takes masks only as specially aligned bias tensors; SDPA is exact here.
        return "sdpa"
    reason = xformers_status(q.device)
    if reason is None:
        return "xformers"
    if name == "xformers":
        _warn_once(
            f"xformers:{q.device}",
            f"attention backend 'xformers' unavailable: {reason}; using SDPA",
        )
    return "sdpa"


def _math(q, k, v, attn_mask, scale):
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))  # "b h s d"
    logits = (q @ k.transpose(-1, -2)) * scale
    if attn_mask is not None:
        logits = logits.masked_fill(~attn_mask, float("-inf"))
    return (logits.softmax(dim=-1) @ v).transpose(1, 2)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    backend: str | None = None,
    attn_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Multi-head attention ``softmax(q k^T / sqrt(d)) v``.

    Args:
        q: ``"b sq h d"``; k, v: ``"b sk h d"``.
        backend: one of ``BACKENDS``; None uses the process default
            (:func:`set_attention_backend`, initially ``"auto"``).
        attn_mask: optional bool ``"b h sq sk"`` (broadcastable), True = attend.
        scale: logit scale, default ``d ** -0.5``.

    Returns:
        ``"b sq h d"``. :func:`last_attention_backend` tells which kernel ran.
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            f"attention expects 'b s h d' tensors, got q {tuple(q.shape)}, k {tuple(k.shape)}, "
            f"v {tuple(v.shape)}"
        )
    if attn_mask is not None and attn_mask.dtype != torch.bool:
        raise ValueError(f"attn_mask must be bool (True = attend), got {attn_mask.dtype}")
    name = _resolve(_check_name(backend or _default_backend), q, attn_mask is not None)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    if name == "xformers":
        import xformers.ops as xops

        out = xops.memory_efficient_attention(q, k, v, scale=scale)
    elif name == "sdpa":
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            attn_mask=attn_mask,
            scale=scale,
        ).transpose(1, 2)
    else:
        out = _math(q, k, v, attn_mask, scale)
    _state.last = name
    return out
