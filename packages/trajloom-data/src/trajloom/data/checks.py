"""The error every dataset format raises, and the track checks they share.

In memory every track array is time-major, pixels of its clip: tracks "t n 2" float32
and visibility "t n" bool; each format module converts its on-disk layout to this one
and checks it with :func:`check_tracks`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FormatError", "check_tracks"]


class FormatError(ValueError):
    """A file does not follow its format; the message names the file and what is wrong.

    `reason` is a short tag for statistics: missing_file, missing_key, missing_member,
    corrupt_member, corrupt_shard, bad_shape, nan_tracks, bad_meta.
    """

    def __init__(self, message: str, reason: str = "bad_format") -> None:
        super().__init__(message)
        self.reason = reason


def check_tracks(
    tracks: np.ndarray, visibility: np.ndarray, where: str, *, allow_nonfinite: bool
) -> None:
    """Raise FormatError (naming `where`) unless tracks are "t n 2" and visibility "t n".

    Both must be non-empty; with `allow_nonfinite` False the tracks must also be finite
    (occluded points need a finite position and visibility False).
    """
    if tracks.ndim != 3 or tracks.shape[-1] != 2:
        raise FormatError(f"{where}: tracks must be 't n 2', got shape {tracks.shape}", "bad_shape")
    if tracks.shape[0] < 1 or tracks.shape[1] < 1:
        raise FormatError(f"{where}: tracks are empty (shape {tracks.shape})", "bad_shape")
    if visibility.shape != tracks.shape[:2]:
        raise FormatError(
            f"{where}: visibility has shape {visibility.shape}, expected {tracks.shape[:2]} "
            "(tracks' t n)",
            "bad_shape",
        )
    if not allow_nonfinite and not np.isfinite(tracks).all():
        bad = int((~np.isfinite(tracks)).sum())
        raise FormatError(
            f"{where}: tracks hold {bad} NaN/inf coordinates; fill occluded points with a finite "
            "position and mark them invisible",
            "nan_tracks",
        )
