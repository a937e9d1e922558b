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


def launch(procs: int, argv: list[str]) -> int:
    """Run ``python -m trajloom_train ARGV`` as ``procs`` local processes; their exit status.

    Each process gets ``cores / procs`` threads unless ``OMP_NUM_THREADS`` is set.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, usable_cores() // procs)))
    args = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={procs}", "--module", "trajloom_train", *argv]
    )
    try:
        run(args)
    except ChildFailedError as err:
        codes = [f.exitcode for f in err.failures.values()]
        code = next((c for c in codes if c > 0), 1)
        print(f"error: a training process exited with status {codes[0]}", file=sys.stderr)
        return code
    except (KeyboardInterrupt, SignalException):
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    return 0
