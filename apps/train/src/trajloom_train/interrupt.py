"""SIGTERM and SIGINT during training: stop at the next step boundary, save, exit 143 / 130.

What a cluster sends before it kills a job (SIGTERM; SLURM and Kubernetes then wait about
30 s before SIGKILL) and what Ctrl-C sends (SIGINT) should not cost the steps since the
last checkpoint. While a stage trains, :class:`StopSignals` turns both into a request;
the next optimizer step carries every process's request in the all-reduce it makes anyway
(``trainer.train_step``), so all processes see the same answer after the same step, save
one checkpoint there and raise :class:`Interrupted` (the command exits ``128 + signal``:
143 for SIGTERM, 130 for SIGINT). Resuming from that checkpoint is exact, like any resume.

A second signal of one process run directly (no launcher) ends it at once, without
saving, as without the handler. Under a launcher (``--procs``, ``torchrun``) a repeated
signal is expected (Ctrl-C reaches every process and the launcher forwards its own) and
changes nothing; the launcher kills what has not stopped after its grace period (30 s). Outside the
training loop (statistics, cache, evaluation) there is no step to finish: both raise
:class:`Signalled` (:func:`signals_raise`), and the command ends with one line and the
same exit status; every stage resumes from its own files.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from trajloom_train.distributed import note_stop_signal

__all__ = [
    "STOP_SIGNALS",
    "Interrupted",
    "Signalled",
    "StopSignals",
    "signal_name",
    "signals_raise",
]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Interrupted(Exception):
    """Training stopped on a signal; the progress is saved. ``exit_code`` = 128 + signal."""

    def __init__(
        self,
        signum: int,
        stage: str,
        step: int,
        steps: int,
        checkpoint: Path | None,
        finished: bool = False,
    ) -> None:
        self.signum, self.stage, self.step, self.steps = signum, stage, step, steps
        self.checkpoint, self.finished = checkpoint, finished
        if finished:
            what = f"stage '{stage}' finished ({steps} steps) before it stopped"
        else:
            saved = f" and saved {checkpoint}" if checkpoint is not None else ""
            what = f"stage '{stage}' stopped at step {step} of {steps}{saved}"
        super().__init__(
            f"interrupted by {signal_name(signum)}: {what}; rerun the same command to resume"
        )

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """While entered (in the main thread), SIGTERM and SIGINT set :attr:`signum` instead of
    ending the process. ``escalate``: a second signal raises :class:`Signalled` at once
    (the command ends without saving, as it would have without the handler)."""

    def __init__(self, escalate: bool) -> None:
        self.escalate = escalate
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> int | None:
        """The first stop signal received, or None."""
        return self.signum

    def pending(self) -> int | None:
        """:attr:`requested`, as a function (what ``train_step`` asks before its all-reduce)."""
        return self.signum

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            note_stop_signal(signum)
            return
        if not self.escalate:
            return
        self._restore()
        raise Signalled(signum)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __exit__(self, *exc: object) -> None:
        self._restore()


class Signalled(BaseException):
    """SIGTERM or SIGINT outside the training loop (a ``BaseException``, like
    ``KeyboardInterrupt``, which SIGINT raises by default: click would turn that into
    "Aborted!" and status 1)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum


def _raise(signum: int, frame: FrameType | None) -> None:
    note_stop_signal(signum)  # a collective that fails or times out now: no second report
    raise Signalled(signum)


@contextmanager
def signals_raise() -> Iterator[None]:
    """While inside (in the main thread), SIGTERM and SIGINT raise :class:`Signalled`,
    noted as the process's stop signal."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
