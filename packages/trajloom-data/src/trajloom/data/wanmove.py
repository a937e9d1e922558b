"""The Wan-Move export: tracks in the pixels of Wan-Move's conditioning image.

`<id>_tracks.npy` float32 "1 f n 2" and `<id>_visibility.npy` bool "1 f n" (a leading
batch axis, as Wan-Move reads them); in memory "f n 2" and "f n". A steered export also
has `<id>_pins.json` (the pins in the export's frames and pixels) and `<id>_pins.jpg`
(the conditioning image with a marker at each target); Wan-Move reads neither, so the
two arrays and the image stay exactly its input format.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from trajloom.data.checks import FormatError, check_tracks

__all__ = ["read_wanmove", "write_wanmove", "write_wanmove_pins"]


def write_wanmove(
    out_dir: str | Path,
    video_id: str,
    tracks: np.ndarray,
    visibility: np.ndarray,
    *,
    src_size: tuple[int, int] | None = None,
    image_size: tuple[int, int] | None = None,
) -> tuple[Path, Path]:
    """Write `<id>_tracks.npy` float32 "1 f n 2" and `<id>_visibility.npy` bool "1 f n".

    Wan-Move reads the pixels of its conditioning image: give `src_size` (the tracks' frame)
    and `image_size` (the image's) as (width, height) to rescale; Wan-Move ignores points
    that are invisible or outside the image. Returns the two paths.
    """
    tracks = np.asarray(tracks, dtype=np.float32)
    vis = np.asarray(visibility).astype(bool)
    check_tracks(tracks, vis, video_id, allow_nonfinite=False)
    if (src_size is None) != (image_size is None):
        raise ValueError("give both src_size and image_size to rescale, or neither")
    if src_size is not None and image_size is not None:
        scale = np.array(
            [image_size[0] / src_size[0], image_size[1] / src_size[1]], dtype=np.float32
        )
        tracks = tracks * scale
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tpath, vpath = out_dir / f"{video_id}_tracks.npy", out_dir / f"{video_id}_visibility.npy"
    np.save(tpath, tracks[None])
    np.save(vpath, vis[None])
    return tpath, vpath


def read_wanmove(out_dir: str | Path, video_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Read a Wan-Move export: tracks "f n 2" float32 and visibility "f n" bool (batch axis dropped)."""
    out_dir = Path(out_dir)
    tpath, vpath = out_dir / f"{video_id}_tracks.npy", out_dir / f"{video_id}_visibility.npy"
    for p in (tpath, vpath):
        if not p.is_file():
            raise FormatError(f"{p}: Wan-Move export file is missing")
    tracks, vis = np.load(tpath), np.load(vpath)
    if tracks.ndim != 4 or tracks.shape[0] != 1 or vis.shape != tracks.shape[:3]:
        raise FormatError(
            f"{tpath}: expected tracks '1 f n 2' and visibility '1 f n', got {tracks.shape}, {vis.shape}"
        )
    return tracks[0].astype(np.float32), vis[0].astype(bool)


def write_wanmove_pins(
    out_dir: str | Path, video_id: str, markers: np.ndarray, image: np.ndarray | None = None
) -> list[Path]:
    """Write `<id>_pins.json` and, with the conditioning ``image`` "h w 3" RGB, `<id>_pins.jpg`.

    ``markers`` "k 4" rows of (point, export frame, x, y) in the export's frames and pixels
    (point -1: named by a source pixel). The JSON is ``{"pins": [{"point", "frame",
    "target"}]}``; the preview draws a marker at each target on a copy of the image.
    """
    from trajloom.data.render import draw_markers

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = np.asarray(markers, dtype=np.float64).reshape(-1, 4)
    pins = [
        {"point": int(p), "frame": int(f), "target": [float(x), float(y)]} for p, f, x, y in rows
    ]
    path = out_dir / f"{video_id}_pins.json"
    path.write_text(json.dumps({"pins": pins}, indent=1) + "\n")
    paths = [path]
    if image is not None:
        preview = draw_markers(image, rows[:, 2:])
        jpg = out_dir / f"{video_id}_pins.jpg"
        cv2.imwrite(str(jpg), cv2.cvtColor(preview, cv2.COLOR_RGB2BGR))
        paths.append(jpg)
    return paths
