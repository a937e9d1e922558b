"""Two independent computations side by side, for FVMD's ground-truth and predicted halves.

numpy releases the GIL inside its loops and its BLAS / LAPACK calls, so two threads
share the work of two cores (the features of the two track sets, their covariance
products, the Fréchet distances of different blocks). Each half computes exactly what it
would alone: results are bit-identical to running them one after the other.

One persistent daemon worker thread serves every call: a thread started per call made
the kernel map and fault in fresh memory for each video's arrays (about 0.25 s of system
time over 60 videos). `concurrent.futures` is not used: its import (it pulls in
`logging`) would cost more than that at every start of `trajloom-metrics score`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

A = TypeVar("A")
B = TypeVar("B")

_NAME = "trajloom-metrics-worker"


class _Job:
    """One call for the worker: the function, then its value or its exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.value = self.fn()
        except BaseException as err:  # handed to the caller's thread by `side_by_side`
            self.error = err
        finally:
            self.done.set()


_jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
_lock = threading.Lock()
_worker: threading.Thread | None = None


def _serve() -> None:
    while True:
        _jobs.get().run()


def _submit(fn: Callable[[], Any]) -> _Job:
    global _worker
    with _lock:
        if _worker is None or not _worker.is_alive():
            _worker = threading.Thread(target=_serve, name=_NAME, daemon=True)
            _worker.start()
    job = _Job(fn)
    _jobs.put(job)
    return job


def side_by_side(first: Callable[[], A], second: Callable[[], B], workers: int) -> tuple[A, B]:
    """`(first(), second())`, the first in the worker thread when `workers >= 2`.

    One after the other with `workers < 2` or when called from the worker itself (so
    never a deadlock). An exception in either is raised once both have ended (the
    second's if both fail).
    """
    if workers < 2 or threading.current_thread().name == _NAME:
        return first(), second()
    job = _submit(first)
    try:
        b = second()
    finally:
        job.done.wait()
    if job.error is not None:
        raise job.error
    return job.value, b
