"""The released TrajLoomDatasets layout: `<id>.npz` tracks, `<id>.mp4` beside them, a captions CSV.

On disk the npz holds tracks "n t 2" (x, y pixels of the video) and visibility "n t";
in memory they are time-major, tracks "t n 2" float32 and visibility "t n" bool.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trajloom.data.checks import FormatError, check_tracks
from trajloom.data.names import canonical_id, natural_key
from trajloom.data.video import VIDEO_SUFFIXES

__all__ = [
    "CAPTION_COLUMNS",
    "RELEASED_TRACK_KEYS",
    "RELEASED_VIS_KEYS",
    "ReleasedItem",
    "find_released_items",
    "folder_captions",
    "load_released_npz",
    "read_captions_csv",
    "save_released_npz",
    "sole_csv",
    "write_captions_csv",
]

#: npz keys tried, in the released loader's order, for tracks "n t 2" and visibility "n t".
RELEASED_TRACK_KEYS = ("trajectory", "trajectories", "tracks")
RELEASED_VIS_KEYS = ("visibility", "visibilities", "vis")
#: Columns of the released captions CSV.
CAPTION_COLUMNS = ("videoid", "video_path", "text")
# Other id / text column names seen in released tables; read, never written.
_ID_FALLBACKS = ("videoid", "vid", "video_id", "id")
_TEXT_FALLBACKS = ("text", "prompt", "caption", "cap", "description", "Prompt", "Caption")


def load_released_npz(
    path: str | Path, *, allow_nonfinite: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Read a released `<id>.npz`: returns tracks "t n 2" float32 px and visibility "t n" bool.

    Key fallbacks as the released loader: tracks under `trajectory`, `trajectories` or
    `tracks` ("n t 2"), visibility under `visibility`, `visibilities` or `vis` ("n t").
    Raises FormatError on a missing or unreadable file, missing keys, bad shapes, or NaN.
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: file does not exist", "missing_file")
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = list(data.keys())
            tkey = next((k for k in RELEASED_TRACK_KEYS if k in keys), None)
            vkey = next((k for k in RELEASED_VIS_KEYS if k in keys), None)
            if tkey is None or vkey is None:
                raise FormatError(
                    f"{path}: needs a tracks key ({'|'.join(RELEASED_TRACK_KEYS)}) and a "
                    f"visibility key ({'|'.join(RELEASED_VIS_KEYS)}); found {sorted(keys)}",
                    "missing_key",
                )
            tracks_nt = np.asarray(data[tkey], dtype=np.float32)
            vis_nt = np.asarray(data[vkey])
    except FormatError:
        raise
    except (OSError, ValueError, EOFError) as err:
        raise FormatError(f"{path}: not a readable npz ({err})", "corrupt_member") from err
    if tracks_nt.ndim != 3 or tracks_nt.shape[-1] != 2:
        raise FormatError(f"{path}: '{tkey}' must be 'n t 2', got shape {tracks_nt.shape}")
    tracks = np.ascontiguousarray(np.swapaxes(tracks_nt, 0, 1))
    vis = np.ascontiguousarray(np.swapaxes(vis_nt, 0, 1)) if vis_nt.ndim == 2 else vis_nt
    check_tracks(tracks, vis, str(path), allow_nonfinite=allow_nonfinite)
    return tracks, vis.astype(bool)


def save_released_npz(path: str | Path, tracks: np.ndarray, visibility: np.ndarray) -> Path:
    """Write tracks "t n 2" and visibility "t n" as a released `<id>.npz` ("n t 2", "n t")."""
    path = Path(path)
    tracks = np.asarray(tracks, dtype=np.float32)
    visibility = np.asarray(visibility).astype(bool)
    check_tracks(tracks, visibility, str(path), allow_nonfinite=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        tracks=np.ascontiguousarray(np.swapaxes(tracks, 0, 1)),
        visibility=np.ascontiguousarray(np.swapaxes(visibility, 0, 1)),
    )
    return path


def read_captions_csv(path: str | Path) -> dict[str, str]:
    """Read a captions CSV (`videoid, video_path, text`) into `{video id: caption}`.

    The id comes from `videoid` (or `vid`, `video_id`, `id`), else from the stem of
    `video_path`; rows with neither are ignored. Ids are canonicalized ('a/b.mp4' -> 'b').
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: captions CSV does not exist")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        headers = [h.strip() for h in reader.fieldnames or []]
        reader.fieldnames = headers
        text_col = next((c for c in _TEXT_FALLBACKS if c in headers), None)
        id_col = next((c for c in _ID_FALLBACKS if c in headers), None)
        if text_col is None or (id_col is None and "video_path" not in headers):
            raise FormatError(
                f"{path}: needs columns {', '.join(CAPTION_COLUMNS)} (or an id and a text "
                f"column); found {headers}"
            )
        captions: dict[str, str] = {}
        for row in reader:
            vid = (row.get(id_col) or "").strip() if id_col else ""
            if not vid:
                vid = (row.get("video_path") or "").strip()
            if vid:
                captions[canonical_id(vid)] = (row.get(text_col) or "").strip()
    return captions


def write_captions_csv(
    path: str | Path, captions: Mapping[str, str], video_paths: Mapping[str, str] | None = None
) -> Path:
    """Write `{video id: caption}` as a captions CSV with columns `videoid, video_path, text`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    video_paths = video_paths or {}
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CAPTION_COLUMNS)
        for vid, text in captions.items():
            writer.writerow([vid, video_paths.get(vid, f"{vid}.mp4"), text])
    return path


def sole_csv(folder: str | Path) -> Path | None:
    """The one `*.csv` directly in `folder`, or None when there is none or more than one."""
    csvs = sorted(Path(folder).glob("*.csv"))
    return csvs[0] if len(csvs) == 1 else None


def folder_captions(folder: str | Path) -> dict[str, str]:
    """`{video id: caption}` of the one captions CSV in `folder` (see :func:`sole_csv`).

    Empty when the folder has no CSV, several, or one that is not a captions CSV: captions
    are optional for the folders of videos and npz files the apps read.
    """
    path = sole_csv(folder)
    if path is None:
        return {}
    try:
        return read_captions_csv(path)
    except FormatError:
        return {}


@dataclass(frozen=True)
class ReleasedItem:
    """One clip of a released-layout folder: its id, track npz and video (if found)."""

    id: str
    npz: Path
    video: Path | None


def find_released_items(
    tracks_dir: str | Path, video_dir: str | Path | None = None
) -> list[ReleasedItem]:
    """Pair every `<id>.npz` under `tracks_dir` with `<id>.<video suffix>` in `video_dir`.

    `video_dir` defaults to `tracks_dir`. Items come in natural order of their ids.
    """
    tracks_dir = Path(tracks_dir)
    if not tracks_dir.is_dir():
        raise FormatError(f"{tracks_dir}: tracks folder does not exist")
    video_dir = Path(video_dir) if video_dir is not None else tracks_dir
    videos: dict[str, Path] = {}
    if video_dir.is_dir():
        for p in video_dir.iterdir():
            if p.suffix.lower() in VIDEO_SUFFIXES:
                videos.setdefault(p.stem, p)
    items = [
        ReleasedItem(id=p.stem, npz=p, video=videos.get(p.stem)) for p in tracks_dir.glob("*.npz")
    ]
    return sorted(items, key=lambda it: natural_key(it.id))
