"""Video input and output: decode any common container or a folder of frames to RGB arrays.

Frames are `uint8` arrays "t h w 3" in RGB order. Sizes are given as `(width, height)`,
matching the `(x, y)` convention of tracks. Decoding uses PyAV (FFmpeg); resizing uses
OpenCV with area interpolation when shrinking (no aliasing) and bilinear when growing, the
same for videos and frame folders so that both give identical pixels for identical input.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image

from trajloom.data.names import natural_key

__all__ = [
    "FRAME_SUFFIXES",
    "VIDEO_SUFFIXES",
    "VideoInfo",
    "VideoReadError",
    "count_frames",
    "damage_note",
    "list_frame_files",
    "probe_video",
    "read_frames",
    "read_frames_dir",
    "read_video",
    "resize_frames",
    "write_video",
]

#: Image suffixes (lower case) that `read_frames_dir` treats as frames.
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

#: Video container suffixes (lower case) that folder scans treat as videos.
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".gif")

#: Frame rate reported for folders of frames, which carry no timing of their own.
DEFAULT_FOLDER_FPS = 30.0


class VideoReadError(ValueError):
    """A video or frame folder could not be read; the message names the file and the reason."""


@dataclass(frozen=True)
class VideoInfo:
    """What a container (or frame folder) says about its video stream.

    `num_frames` comes from the container header when it has one, else it is estimated from
    duration x fps (`num_frames_exact` is then False); decode to know it for certain.
    """

    width: int
    height: int
    fps: float
    num_frames: int
    codec: str
    num_frames_exact: bool = True


def list_frame_files(folder: str | Path) -> list[Path]:
    """Image files in `folder` (suffixes in FRAME_SUFFIXES), in natural order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VideoReadError(f"{folder}: not a folder of frames (does not exist or is a file)")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES]
    return sorted(files, key=lambda p: natural_key(p.name))


def _frames_folder(path: Path) -> Path | None:
    """The folder holding the frames of `path`: itself, or its single `frames/` subfolder."""
    if not path.is_dir():
        return None
    if list_frame_files(path):
        return path
    sub = path / "frames"
    if sub.is_dir() and list_frame_files(sub):
        return sub
    return path


def _check_size(size: tuple[int, int] | None, where: str | Path) -> tuple[int, int] | None:
    if size is None:
        return None
    if len(size) != 2 or int(size[0]) < 1 or int(size[1]) < 1:
        raise ValueError(f"{where}: size must be (width, height) with both >= 1, got {size!r}")
    return int(size[0]), int(size[1])


def _check_range(start: int, num_frames: int | None, where: str | Path) -> None:
    if start < 0:
        raise VideoReadError(f"{where}: start={start} is negative; frames count from 0")
    if num_frames is not None and num_frames < 1:
        raise VideoReadError(f"{where}: num_frames={num_frames} must be >= 1 (or None for all)")


def _range_error(
    where: str | Path, start: int, num_frames: int | None, total: int
) -> VideoReadError:
    want = f"[{start}, {start + num_frames})" if num_frames is not None else f"[{start}, end)"
    return VideoReadError(
        f"{where}: frame range {want} lies outside the clip of {total} frames; "
        f"ask for start + num_frames <= {total}"
    )


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize "t h w 3" uint8 frames to `size` = (width, height); area filter when shrinking."""
    width, height = size
    t, h, w = frames.shape[:3]
    if (w, h) == (width, height):
        return frames
    interp = cv2.INTER_AREA if width <= w and height <= h else cv2.INTER_LINEAR
    out = np.empty((t, height, width, 3), dtype=np.uint8)
    for i in range(t):
        out[i] = cv2.resize(frames[i], (width, height), interpolation=interp)
    return out


def _resize_one(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or (frame.shape[1], frame.shape[0]) == size:
        return frame
    shrink = size[0] <= frame.shape[1] and size[1] <= frame.shape[0]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(frame, size, interpolation=interp)


def _open(path: Path | bytes, name: str | Path) -> av.container.InputContainer:
    if isinstance(path, bytes):
        if not path:
            raise VideoReadError(f"{name}: video bytes are empty")
        try:
            container = av.open(io.BytesIO(path), mode="r")
        except av.FFmpegError as err:
            raise VideoReadError(f"{name}: cannot be opened as a video ({err})") from err
        if not container.streams.video:
            container.close()
            raise VideoReadError(f"{name}: container has no video stream")
        return container
    if not path.exists():
        raise VideoReadError(f"{path}: file does not exist")
    if not path.is_file():
        raise VideoReadError(f"{path}: not a file")
    try:
        container = av.open(str(path), mode="r")
    except av.FFmpegError as err:
        raise VideoReadError(f"{path}: cannot be opened as a video ({err})") from err
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"{path}: container has no video stream")
    return container


def damage_note(label: str | Path, info: VideoInfo, decoded: int) -> str | None:
    """Why a video that decodes ``decoded`` frames is damaged, or None when it is whole.

    A video is damaged (truncated copy, broken stream) when its header states a frame
    count exactly (``info.num_frames_exact``) and fewer frames decode; an estimated count
    proves nothing. The note names the video and both counts.
    """
    if info.num_frames_exact and decoded < info.num_frames:
        return (
            f"{label}: damaged or truncated video: its header says {info.num_frames} frames, "
            f"only {decoded} decode"
        )
    return None


def count_frames(path: str | Path) -> int:
    """How many frames of a video file decode, up to the first decoding error (decodes the
    whole stream, keeps nothing). Raises VideoReadError when it cannot be opened."""
    count = 0
    with _open(Path(path), path) as container:
        try:
            for _ in container.decode(container.streams.video[0]):
                count += 1
        except av.FFmpegError:
            pass  # a broken stream: the frames before the break are what decodes
    return count


def probe_video(path: str | Path) -> VideoInfo:
    """Read the header of a video file (or the first image of a frame folder); decodes nothing."""
    path = Path(path)
    folder = _frames_folder(path)
    if folder is not None:
        files = list_frame_files(folder)
        if not files:
            raise VideoReadError(f"{path}: folder holds no frames ({', '.join(FRAME_SUFFIXES)})")
        first = _read_image(files[0])
        return VideoInfo(
            width=first.shape[1],
            height=first.shape[0],
            fps=DEFAULT_FOLDER_FPS,
            num_frames=len(files),
            codec=files[0].suffix.lower().lstrip("."),
        )
    with _open(path, path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        exact = bool(stream.frames)
        if exact:
            count = int(stream.frames)
        elif stream.duration is not None and stream.time_base is not None:
            count = round(float(stream.duration * stream.time_base) * fps)
        elif container.duration is not None:
            count = round(container.duration / av.time_base * fps)
        else:
            count = 0
        return VideoInfo(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=fps,
            num_frames=count,
            codec=stream.codec_context.name,
            num_frames_exact=exact,
        )


def read_video(
    path: str | Path | bytes,
    *,
    size: tuple[int, int] | None = None,
    start: int = 0,
    num_frames: int | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Decode frames `[start, start + num_frames)` of a video to "t h w 3" uint8 RGB.

    `path` is a file or the encoded bytes of one (e.g. a shard's `video.mp4` member; `name`
    then labels it in errors). `size` = (width, height) resizes every frame;
    `num_frames=None` reads to the end. Raises VideoReadError when the file is missing or
    undecodable, has no frames, or the range does not lie inside the clip.
    """
    source: Path | bytes = path if isinstance(path, bytes) else Path(path)
    label = name or ("<video bytes>" if isinstance(source, bytes) else str(source))
    size = _check_size(size, label)
    _check_range(start, num_frames, label)
    stop = None if num_frames is None else start + num_frames
    with _open(source, label) as container:
        frames, total = _decode_range(container, label, start, stop, size)
    if total == 0:
        raise VideoReadError(f"{label}: the video stream holds no decodable frames")
    if not frames or (num_frames is not None and len(frames) < num_frames):
        raise _range_error(label, start, num_frames, total)
    return np.stack(frames)


def _decode_range(
    container: av.container.InputContainer,
    label: str,
    start: int,
    stop: int | None,
    size: tuple[int, int] | None,
) -> tuple[list[np.ndarray], int]:
    """Frames [start, stop) and the number of frames decoded.

    Frames are numbered by their order of decoding from the first frame, never by
    timestamps: a variable-frame-rate video (a phone's, a screen recording) has no
    frame-rate arithmetic that maps a timestamp to a frame index. Frames before ``start``
    are decoded but not converted or resized.
    """
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    frames: list[np.ndarray] = []
    index = -1
    try:
        for index, frame in enumerate(container.decode(stream)):
            if stop is not None and index >= stop:
                index -= 1
                break
            if index >= start:
                frames.append(_resize_one(frame.to_ndarray(format="rgb24"), size))
    except av.FFmpegError as err:
        raise VideoReadError(f"{label}: decoding failed after frame {index} ({err})") from err
    return frames, index + 1


def _read_image(file: Path) -> np.ndarray:
    data = np.fromfile(file, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise VideoReadError(f"{file}: image is empty or cannot be decoded")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_frames_dir(
    folder: str | Path,
    *,
    size: tuple[int, int] | None = None,
    start: int = 0,
    num_frames: int | None = None,
) -> np.ndarray:
    """Read a folder of JPEG/PNG frames (natural sort) to "t h w 3" uint8 RGB.

    A folder with no images but a `frames/` subfolder reads that subfolder. Without `size`,
    all frames must share one size.
    """
    folder = Path(folder)
    size = _check_size(size, folder)
    _check_range(start, num_frames, folder)
    resolved = _frames_folder(folder)
    if resolved is None:
        raise VideoReadError(f"{folder}: not a folder of frames (does not exist or is a file)")
    files = list_frame_files(resolved)
    if not files:
        raise VideoReadError(f"{folder}: folder holds no frames ({', '.join(FRAME_SUFFIXES)})")
    stop = len(files) if num_frames is None else start + num_frames
    if start >= len(files) or stop > len(files):
        raise _range_error(folder, start, num_frames, len(files))
    frames = [_resize_one(_read_image(f), size) for f in files[start:stop]]
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise VideoReadError(
            f"{folder}: frames differ in size ({sorted(shapes)}); pass size=(width, height)"
        )
    return np.stack(frames)


def read_frames(
    path: str | Path,
    *,
    size: tuple[int, int] | None = None,
    start: int = 0,
    num_frames: int | None = None,
) -> np.ndarray:
    """Read a video file or a folder of frames to "t h w 3" uint8 RGB (see read_video)."""
    path = Path(path)
    if path.is_dir():
        return read_frames_dir(path, size=size, start=start, num_frames=num_frames)
    return read_video(path, size=size, start=start, num_frames=num_frames)


def _check_frames(frames: np.ndarray, path: Path) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"{path}: frames must be 't h w 3' with t >= 1, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"{path}: frames must be uint8, got {frames.dtype}; clip and cast first")
    return frames


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: float = 16.0,
    *,
    crf: int = 18,
    preset: str = "medium",
) -> Path:
    """Write "t h w 3" uint8 RGB frames as H.264 MP4 (yuv420p), or as GIF for a `.gif` path.

    yuv420p needs even sizes: an odd width or height is padded by repeating the last
    column/row, so pixel coordinates of the content stay unchanged. `crf` is the x264
    quality (0 lossless luma, 18 visually lossless, 23 default); `preset` trades encoding
    speed for size ("ultrafast" ... "veryslow"). Returns the path.
    """
    path = Path(path)
    frames = _check_frames(frames, path)
    if fps <= 0:
        raise ValueError(f"{path}: fps must be > 0, got {fps}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        images = [Image.fromarray(f) for f in frames]
        images[0].save(
            path,
            save_all=True,
            append_images=images[1:],
            duration=round(1000.0 / fps),
            loop=0,
            optimize=False,
        )
        return path
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width = frames.shape[2]
        stream.height = frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": preset}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
