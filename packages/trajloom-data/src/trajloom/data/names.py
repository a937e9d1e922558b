"""Names of clips and files: the canonical video id and the natural sort order.

Every place that lists inputs (frame folders, released folders, the sample and bench
apps) orders them with :func:`natural_key`, so "clip10" comes after "clip9" everywhere.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["canonical_id", "natural_key"]


def natural_key(name: str) -> list[int | str]:
    """Sort key of a name in natural order: digit runs compare as integers, text case-blind.

    ``sorted(names, key=natural_key)`` puts "frame9" before "frame10" and "B2" after "a1".
    """
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def canonical_id(path_or_name: str | os.PathLike) -> str:
    """The video id of a path or name, as the released code derives it: '.../6764402.mp4' -> '6764402'."""
    return Path(str(path_or_name).strip()).stem
