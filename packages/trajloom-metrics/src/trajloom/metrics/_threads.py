"""Two independent computations side by side, for FVMD's ground-truth and predicted halves.

numpy releases the GIL inside its loops and its BLAS / LAPACK calls, so two threads
share the work of two cores (the features of the two track sets, their covariance
products, the Fréchet distances of different blocks). Each half computes exactly what it
would alone: results are bit-identical to running them one after the other.

A plain `threading.Thread` per call (tens of microseconds) rather than
`concurrent.futures`, whose import (it pulls in `logging`) costs more than that at the
start of every `trajloom-metrics score`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

A = TypeVar("A")
B = TypeVar("B")


def side_by_side(first: Callable[[], A], second: Callable[[], B], workers: int) -> tuple[A, B]:
    """`(first(), second())`, the first in a second thread when `workers >= 2`.

    One after the other with `workers < 2`. An exception in either is raised once both
    have ended (the second's if both fail).
    """
    if workers < 2:
        return first(), second()
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = first()
        except BaseException as err:  # re-raised in the calling thread below
            out["error"] = err

    thread = threading.Thread(target=run, name="trajloom-metrics", daemon=True)
    thread.start()
    try:
        b = second()
    finally:
        thread.join()
    if "error" in out:
        raise out["error"]
    return out["value"], b
