"""Writing results safely: atomic files, one writer per output folder, writability up front.

Every batch command of TrajLoom (training runs, sampling, bench builds and evaluations)
writes into a folder that a later command reads. Three rules keep those folders
trustworthy, whatever happens to the process or the disk:

* a file is replaced whole or not at all (:func:`atomic_write_text`, :func:`atomic_write_json`:
  a temporary file, ``fsync``, rename; a full disk leaves the previous version, never an
  empty or half-written one);
* one writer at a time (:class:`OutputLock`: an exclusive ``flock`` on ``<folder>/.lock``
  holding the writer's PID; a second writer is refused with a message naming the holder,
  and a lock whose process died is free again, because the kernel releases it);
* a folder that cannot be written is refused before any work (:func:`check_writable`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

__all__ = [
    "LOCK_NAME",
    "OutputError",
    "OutputLock",
    "atomic_write_json",
    "atomic_write_text",
    "check_writable",
]

LOCK_NAME = ".lock"


class OutputError(OSError):
    """An output folder cannot be used: not writable, or locked by another process."""


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a synced temporary file and a rename.

    On failure (a full disk, a read-only folder) the temporary file is removed, ``path``
    keeps its previous content, and :class:`OutputError` names the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OutputError(
            f"could not write {path}: {err.strerror or err}; free space or choose another "
            "output folder"
        ) from err
    return path


def _plain(value: Any) -> Any:
    """JSON fallback for numpy values, tensors and paths."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


def atomic_write_json(path: str | Path, value: Any) -> Path:
    """:func:`atomic_write_text` of ``value`` as indented JSON (numpy values and paths too)."""
    return atomic_write_text(path, json.dumps(value, indent=2, default=_plain) + "\n")


def check_writable(folder: str | Path, what: str = "output folder") -> Path:
    """Create ``folder`` if needed and prove a file can be written in it, before any work."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OutputError(
            f"{what} {folder} is not writable ({err.strerror or err}); fix its permissions "
            "or choose another folder"
        ) from err
    return folder


class OutputLock:
    """Exclusive use of an output folder by this process (a context manager).

    ``with OutputLock(folder, what="run folder"):`` takes an ``flock`` on
    ``folder/.lock`` and writes this PID into it; another process trying the same folder
    gets :class:`OutputError` naming the holder's PID. The kernel drops the lock when
    the holder exits, even on ``kill -9``, so a stale ``.lock`` file never blocks.
    Re-entrant within one process (nested commands share the lock).
    """

    _held: ClassVar[dict[Path, int]] = {}  # resolved folder -> nesting depth, this process

    def __init__(self, folder: str | Path, what: str = "output folder") -> None:
        self.folder = Path(folder)
        self.what = what
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        key = check_writable(self.folder, self.what).resolve()
        if key in self._held:
            self._held[key] += 1
            return self
        fd = os.open(key / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise OutputError(
                f"{self.what} {self.folder} is in use by another process (PID {holder}); "
                "wait for it to finish or choose another folder",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        self._held[key] = 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        key = self.folder.resolve()
        self._held[key] -= 1
        if self._held[key]:
            return
        del self._held[key]
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
