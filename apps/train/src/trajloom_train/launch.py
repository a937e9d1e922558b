"""One command, every core: ``--procs`` runs a training command as N local DDP processes.

On a CPU, torch's intra-op threads buy little at the small presets (two threads on two
cores ran the quick recipe's steps barely faster than one, with a quarter of the CPU
time in the kernel), while N processes of one thread each split every global batch N
ways (DDP, gloo). ``--procs auto`` (the default) therefore launches one process per
usable core on a CPU, limited to a number that divides every stage's batch (so the
updates stay those of one process on the same global batch: ``tests/apps/test_train_ddp``);
on a GPU it stays one process (many GPUs: ``torchrun``, as the README shows).

The processes are started by torch's own elastic launcher (what ``torchrun --standalone``
runs), each with ``cores / N`` threads unless ``OMP_NUM_THREADS`` is set. A process that
fails ends the others; the exit status is the failed process's.
"""

from __future__ import annotations

import math
import os
import signal
import sys

import torch

from trajloom_train.config import Recipe

__all__ = [
    "MAX_AUTO_PROCS",
    "auto_procs",
    "check_split",
    "launch",
    "parse_procs",
    "under_launcher",
    "usable_cores",
]

#: ``--procs auto`` never starts more processes than this (each holds a model and data).
MAX_AUTO_PROCS = 8
_TRAINED = ("vae", "flow", "onpolicy", "vis")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def under_launcher() -> bool:
    """Whether this process is one of a launched job (``torchrun`` or ``--procs``)."""
    return "WORLD_SIZE" in os.environ


def parse_procs(value: str) -> int | None:
    """``--procs``: ``auto`` -> None, else a positive integer; anything else raises."""
    if value.strip().lower() == "auto":
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"--procs {value!r}: give a positive number of processes, or auto")
    return n


def auto_procs(recipe: Recipe, device: str, cores: int | None = None) -> int:
    """``--procs auto``: 1 on a GPU; on a CPU the most processes, up to one per core and
    :data:`MAX_AUTO_PROCS`, that divide every trained stage's batch."""
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return 1
    cores = usable_cores() if cores is None else cores
    batches = math.gcd(*(recipe.stage(name).batch_size for name in _TRAINED))
    limit = max(1, min(cores, MAX_AUTO_PROCS))
    return max(n for n in range(1, limit + 1) if batches % n == 0)


def check_split(recipe: Recipe, procs: int) -> None:
    """Raise ValueError, naming the stage, if a trained stage's batch does not split over
    ``procs`` processes (checked once, before any process starts)."""
    for name in _TRAINED:
        try:
            recipe.stage(name).accumulation(procs)
        except ValueError as err:
            raise ValueError(f"--procs {procs}: {name}.{err}") from None


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _status(codes: dict[int, int]) -> tuple[int, str | None]:
    """The launch's exit status from its processes' (rank -> exit code, -N: killed by
    signal N), and the line to print when no process could say what happened itself.

    The root cause wins over what followed from it: a collective timeout (3: the waiting
    rank said so; the launcher then killed the stuck one), bad input (2), a process
    killed by a signal other than a stop signal (e.g. SIGKILL from the out-of-memory
    killer: it could not say anything, so the launcher does), a failure with a message or
    traceback (1: diverged, or lost the other processes), then a stop (130, 143).
    """
    values = set(codes.values())
    for reported in (3, 2):
        if reported in values:
            return reported, None
    stops = (-signal.SIGTERM, -signal.SIGINT)
    for rank, code in codes.items():
        if code < 0 and code not in stops:
            return 128 - code, (
                f"error: the training process of rank {rank} was killed by {_signal_name(-code)}"
            )
    statuses = [128 - c if c < 0 else c for c in codes.values()]
    if 1 in statuses:
        return 1, None
    for rank, code in zip(codes, statuses, strict=True):
        if code not in (0, 130, 143):
            return code, f"error: the training process of rank {rank} exited with status {code}"
    return next((c for c in statuses if c in (130, 143)), 1), None


def launch(procs: int, argv: list[str]) -> int:
    """Run ``python -m trajloom_train ARGV`` as ``procs`` local processes; their exit status.

    Each process gets ``cores / procs`` threads unless ``OMP_NUM_THREADS`` is set. The
    elastic launcher's own log lines are kept quiet: a process that fails says why in one
    line, and this function adds one only where the process could not (killed by a signal;
    :func:`_status`).
    """
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    # the launcher's modules give each of their loggers its own level (LOGLEVEL, WARNING)
    for name in ["torch.distributed.elastic", *logging.root.manager.loggerDict]:
        if name.startswith(("torch.distributed.elastic", "torch.distributed.run")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, usable_cores() // procs)))
    args = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={procs}", "--module", "trajloom_train", *argv]
    )
    try:
        run(args)
    except ChildFailedError as err:
        code, line = _status({rank: f.exitcode for rank, f in sorted(err.failures.items())})
        if line is not None:
            print(line, file=sys.stderr)
        return code
    except SignalException as err:
        # The processes got the signal too (forwarded) and saved at their next step.
        return 128 + int(err.sigval)
    except KeyboardInterrupt:
        return 130
    return 0
