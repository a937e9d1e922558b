"""Names of clips and files: the one rule for names from input, the canonical video id and
the natural sort order.

Names that come from input (shard sample ids, ``--method NAME=``, ``--source NAME=``,
file stems) become file and folder names under an output folder, so they are names,
never paths: :func:`check_name` allows only ``[A-Za-z0-9._-]``, not starting with ``.``
(no ``..``, no hidden files), at most :data:`MAX_NAME` characters; :func:`safe_child`
joins checked names to a root and proves the result stays under it. A local file's stem
is made safe instead of refused (:func:`safe_stem`), and :class:`UniqueNames` gives
same-named inputs distinct, stable names (``clip``, ``clip-2``, ...).

Every place that lists inputs (frame folders, released folders, the sample and bench
apps) orders them with :func:`natural_key`, so "clip10" comes after "clip9" everywhere.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = [
    "MAX_NAME",
    "UniqueNames",
    "UnsafeNameError",
    "canonical_id",
    "check_name",
    "natural_key",
    "safe_child",
    "safe_stem",
]

#: The longest name allowed (file systems take 255 bytes; suffixes are added to names).
MAX_NAME = 128
_SAFE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class UnsafeNameError(ValueError):
    """A name from input that is not a safe file name; the message names the input."""


def check_name(kind: str, value: object) -> str:
    """``value`` when it is a safe name, else :class:`UnsafeNameError` naming ``kind``.

    Safe: a non-empty string of ``A-Z a-z 0-9 . _ -`` that does not start with ``.``, at
    most :data:`MAX_NAME` characters; so never ``/``, ``..``, an absolute path, a hidden
    file or a control character.
    """
    if not isinstance(value, str) or not _SAFE.fullmatch(value) or len(value) > MAX_NAME:
        shown = repr(value)[:80]
        raise UnsafeNameError(
            f"{kind} {shown} is not a safe name: use only letters, digits, '.', '_' and '-', "
            f"not starting with '.', at most {MAX_NAME} characters"
        )
    return value


def safe_child(root: str | os.PathLike, *names: str, kind: str = "name") -> Path:
    """``root / names...`` after :func:`check_name` of each, resolved and proven to lie
    under ``root`` (a symlink inside ``root`` pointing out of it is refused too)."""
    root_path = Path(root)
    path = root_path.joinpath(*(check_name(kind, n) for n in names))
    base = root_path.resolve()
    resolved = path.resolve()
    if resolved != base and base not in resolved.parents:
        raise UnsafeNameError(f"{kind} {'/'.join(names)!r} leads out of {root_path} to {resolved}")
    return path


def safe_stem(stem: str, fallback: str = "clip") -> str:
    """A safe name made from a local file's stem: other characters become ``_``, leading
    dots go, it is cut to :data:`MAX_NAME` characters; ``fallback`` when nothing is left."""
    name = _UNSAFE_CHARS.sub("_", stem).lstrip(".")[:MAX_NAME]
    return name if name and _SAFE.fullmatch(name) else fallback


class UniqueNames:
    """Distinct names for one output folder: the first input named ``clip`` keeps it, the
    next ones get ``clip-2``, ``clip-3``... (stable: the same inputs in the same order
    give the same names), never a name already given."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def claim(self, name: str) -> str:
        """``name``, or the first free ``name-<k>``, now taken."""
        unique, k = name, 1
        while unique.lower() in self._taken:  # case-blind: case-insensitive file systems
            k += 1
            suffix = f"-{k}"
            unique = name[: MAX_NAME - len(suffix)] + suffix
        self._taken.add(unique.lower())
        return unique


def natural_key(name: str) -> list[int | str]:
    """Sort key of a name in natural order: digit runs compare as integers, text case-blind.

    ``sorted(names, key=natural_key)`` puts "frame9" before "frame10" and "B2" after "a1".
    """
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def canonical_id(path_or_name: str | os.PathLike) -> str:
    """The video id of a path or name, as the released code derives it: '.../6764402.mp4' -> '6764402'."""
    return Path(str(path_or_name).strip()).stem
