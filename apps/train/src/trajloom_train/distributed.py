"""Processes and devices: one process, or many under ``torchrun`` (gloo on CPU, NCCL on GPU).

Gradients are averaged by torch's ``DistributedDataParallel``, which the trainer wraps
around each stage's loss (``trajloom_train.trainer.data_parallel``); what is left here is
joining the process group and the few collectives the loop needs besides gradients
(summed loss denominators and logs, barriers, rank 0's decisions sent to every rank).

Every process must reach every collective the same number of times, in the same order:
a decision that gates a collective is made from state every process shares (the step
counter, the recipe) or made on rank 0 and sent to the others (:func:`from_main`), never
from a directory listing, a file or a clock that each process reads for itself.

A collective that waits longer than the collective timeout (:func:`collective_timeout`:
``--collective-timeout``, ``TRAJLOOM_COLLECTIVE_TIMEOUT``, default 10 minutes) ends the
process with one line naming the stage, the step, the rank and what it waited for
(:data:`EXIT_TIMEOUT`): another process is stuck or has died, and waiting on helps nobody.
A watchdog thread enforces it whatever the backend; the process group gets the same
timeout (plus a margin) as a second line of defence. The few waits for work of unbounded
length on another rank (the latent cache of a dataset share, rank 0's final evaluation)
use :func:`barrier` with ``patient=True``: a separate group with a timeout of a day.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = [
    "DEFAULT_COLLECTIVE_TIMEOUT_S",
    "EXIT_TIMEOUT",
    "PATIENT_TIMEOUT_S",
    "TEST_DELAY_ENV",
    "TIMEOUT_ENV",
    "Dist",
    "all_gather_objects",
    "all_reduce_sum",
    "barrier",
    "collective_timeout",
    "from_main",
    "init_distributed",
    "injected_delay",
    "note_stop_signal",
    "set_place",
    "shutdown",
    "stop_signal_received",
    "waiting",
    "where",
]

#: Default of ``--collective-timeout``: how long a process waits for the others in one collective.
DEFAULT_COLLECTIVE_TIMEOUT_S = 600.0
TIMEOUT_ENV = "TRAJLOOM_COLLECTIVE_TIMEOUT"
#: Waits for another rank's work of unbounded length (see the module docstring).
PATIENT_TIMEOUT_S = 24 * 3600.0
#: Exit status of a process whose collective timed out (its one-line error is printed).
EXIT_TIMEOUT = 3
#: Test-only fault injection: ``RANK:POINT:SECONDS[,...]`` (RANK a number or ``*``; POINT one
#: of finish, save, validate, preview, resume, step). The process of that rank sleeps
#: SECONDS when it reaches POINT, before the point's collectives: a slow or stuck rank.
TEST_DELAY_ENV = "TRAJLOOM_TEST_DELAY"
_TEST_POINTS = ("finish", "save", "validate", "preview", "resume", "step")
# The process group's own timeout is the collective timeout plus this: the watchdog reports
# first, with the stage and step, and the backend's timeout stays a backstop.
_BACKEND_MARGIN_S = 60.0


@dataclass(frozen=True)
class Dist:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def collective_timeout(value: float | str | None = None) -> float:
    """Seconds a collective may wait: ``value``, else ``TRAJLOOM_COLLECTIVE_TIMEOUT``, else
    :data:`DEFAULT_COLLECTIVE_TIMEOUT_S`; raises ValueError unless finite and > 0."""
    source = "--collective-timeout"
    if value is None:
        value = os.environ.get(TIMEOUT_ENV)
        source = TIMEOUT_ENV
    if value is None or value == "":
        return DEFAULT_COLLECTIVE_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{source} {value!r}: give a finite number of seconds > 0")
    return seconds


def _pick_device(device: str, local_rank: int) -> torch.device:
    if device == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but torch sees no CUDA device")
        return torch.device(f"cuda:{local_rank}")
    if device == "cpu":
        return torch.device("cpu")
    raise ValueError(f"--device must be auto, cpu or cuda, got {device!r}")


# Groups of CPU collectives (gloo, also in an NCCL job): objects and barriers, with the
# collective timeout and with the patient one.
_GROUPS: dict[str, Any] = {}


def init_distributed(device: str = "auto", timeout_s: float | None = None) -> Dist:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Without ``WORLD_SIZE`` (or with 1) this is a single process. Multi-node runs use
    torchrun's rendezvous (``--nnodes``, ``--rdzv-endpoint``); nothing here is node-aware
    beyond ``LOCAL_RANK`` choosing the GPU. ``timeout_s``: :func:`collective_timeout`.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _pick_device(device, local_rank)
    timeout = collective_timeout(timeout_s)
    _WATCHDOG.configure(rank, world, timeout)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(
            backend="nccl" if dev.type == "cuda" else "gloo",
            timeout=timedelta(seconds=timeout + _BACKEND_MARGIN_S),
        )
        _GROUPS["cpu"] = dist.new_group(
            backend="gloo", timeout=timedelta(seconds=timeout + _BACKEND_MARGIN_S)
        )
        _GROUPS["patient"] = dist.new_group(
            backend="gloo", timeout=timedelta(seconds=PATIENT_TIMEOUT_S)
        )
    return Dist(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def shutdown() -> None:
    _WATCHDOG.disarm(everything=True)
    _GROUPS.clear()
    if dist.is_initialized():
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- watchdog


class _Watchdog:
    """One daemon thread that ends the process when an armed wait passes its deadline.

    Arming is two attribute writes under a lock (cheap enough for every step). The thread
    prints one line and calls ``os._exit``: a thread cannot interrupt a collective
    blocked in C++, and there is nothing to clean up that the run folder needs (checkpoints
    and logs are written atomically; the run lock is released by the kernel).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: list[tuple[float, str]] = []  # (deadline, what): nested waits
        self._thread: threading.Thread | None = None
        self.rank, self.world, self.timeout = 0, 1, DEFAULT_COLLECTIVE_TIMEOUT_S
        self.stage: str | None = None
        self.step: int | None = None
        self.stop_signal: int | None = None  # set when a stop signal was received

    def configure(self, rank: int, world: int, timeout: float) -> None:
        self.rank, self.world, self.timeout = rank, world, timeout

    def arm(self, what: str) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="trajloom-collective-watchdog", daemon=True
                )
                self._thread.start()
            self._armed.append((time.monotonic() + self.timeout, what))
            self._cond.notify()

    def disarm(self, everything: bool = False) -> None:
        with self._cond:
            if everything:
                self._armed.clear()
            elif self._armed:
                self._armed.pop()

    def _watch(self) -> None:
        with self._cond:
            while True:
                if not self._armed:
                    self._cond.wait()
                    continue
                deadline, what = min(self._armed)
                left = deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                self._fire(what)

    def message(self, what: str) -> str:
        return (
            f"error: rank {self.rank} of {self.world} waited {self.timeout:g} s for the other "
            f"processes ({what}) in {where()}: another process is stuck or has died. "
            "Rerun the same command to resume from the last checkpoint; "
            f"--collective-timeout ({TIMEOUT_ENV}) sets the limit"
        )

    def _fire(self, what: str) -> None:
        if self.stop_signal is not None:
            # This process was told to stop (by its launcher, because another process
            # failed, or by the user) and the others did not answer: no second report.
            os._exit(128 + self.stop_signal)
        try:
            sys.stderr.write(self.message(what) + "\n")
            sys.stderr.flush()
        finally:
            os._exit(EXIT_TIMEOUT)


_WATCHDOG = _Watchdog()


def set_place(stage: str | None, step: int | None = None) -> None:
    """Where the run is, for the timeout's message: the stage and its step (None: none)."""
    _WATCHDOG.stage, _WATCHDOG.step = stage, step


def where() -> str:
    """Where the run is, in words: "stage 'vae' at step 12" (what :func:`set_place` said)."""
    w = _WATCHDOG
    out = f"stage '{w.stage}'" if w.stage else "the run"
    return out + (f" at step {w.step}" if w.step is not None else "")


def stop_signal_received() -> int | None:
    """The stop signal this process received while training (:func:`note_stop_signal`)."""
    return _WATCHDOG.stop_signal


def note_stop_signal(signum: int) -> None:
    """A stop signal arrived: a later collective timeout exits quietly with 128 + signum."""
    if _WATCHDOG.stop_signal is None:
        _WATCHDOG.stop_signal = signum


@contextmanager
def waiting(what: str) -> Iterator[None]:
    """Bound the collectives inside by the collective timeout (one process: no-op).

    ``what`` names the wait in the timeout's message ("the barrier after the checkpoint").
    """
    if not dist.is_initialized():
        yield
        return
    _WATCHDOG.arm(what)
    try:
        yield
    finally:
        _WATCHDOG.disarm()


# ----------------------------------------------------------------------------- collectives


def barrier(what: str = "a barrier", *, patient: bool = False) -> None:
    """Wait for every process. ``patient``: the other side may be doing work of unbounded
    length (a share of the latent cache, the final evaluation): no collective timeout."""
    if not dist.is_initialized():
        return
    if patient:
        dist.barrier(group=_GROUPS.get("patient"))
        return
    with waiting(what):
        dist.barrier(group=_GROUPS.get("cpu"))


def all_reduce_sum(x: torch.Tensor, what: str = "a sum over processes") -> torch.Tensor:
    """Sum of ``x`` over processes (in place, also returned); identity in one process."""
    if dist.is_initialized():
        with waiting(what):
            dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


T = TypeVar("T")


def from_main(value: T, what: str = "rank 0's decision") -> T:
    """Rank 0's ``value`` on every process (a picklable object); identity in one process.

    Every process must call it (with its own, ignored, value on ranks > 0).
    """
    if not dist.is_initialized():
        return value
    box = [value]
    with waiting(what):
        dist.broadcast_object_list(box, src=0, group=_GROUPS.get("cpu"))
    return box[0]


def all_gather_objects(value: Any, what: str = "gathering from every process") -> list[Any]:
    """Every process's ``value``, in rank order; ``[value]`` in one process."""
    if not dist.is_initialized():
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    with waiting(what):
        dist.all_gather_object(out, value, group=_GROUPS.get("cpu"))
    return out


# ----------------------------------------------------------------------------- fault injection


def _delays() -> list[tuple[str, str, float]]:
    spec = os.environ.get(TEST_DELAY_ENV, "").strip()
    out = []
    for item in filter(None, (x.strip() for x in spec.split(","))):
        rank, point, seconds = item.split(":")
        if point not in _TEST_POINTS:
            raise ValueError(f"{TEST_DELAY_ENV}: unknown point {point!r} in {item!r}")
        out.append((rank, point, float(seconds)))
    return out


def injected_delay(point: str, rank: int) -> None:
    """Test-only: sleep as ``TRAJLOOM_TEST_DELAY`` says for this rank at ``point``."""
    if TEST_DELAY_ENV not in os.environ:
        return
    for who, where, seconds in _delays():
        if where == point and who in ("*", str(rank)):
            time.sleep(seconds)
