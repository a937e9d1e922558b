"""Variable-frame-rate video (issue 25): frames are numbered by decoding order.

A 50-then-10 fps file numbered by timestamp and the average rate gave frame 14 for
``start=5`` and refused ``start=16`` although 60 frames exist; the demo's pin board then
refused a video that Predict accepted.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from trajloom.data.video import read_video

FRAMES = 60
LEVEL = 4  # frame i is a flat grey of LEVEL * i


def _vfr_video(path: Path) -> Path:
    """30 frames 20 ms apart (50 fps), then 30 frames 100 ms apart (10 fps)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=50)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        pts = 0
        for i in range(FRAMES):
            image = np.full((64, 64, 3), LEVEL * i, np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
            pts += 20 if i < 30 else 100
        for packet in stream.encode():
            out.mux(packet)
    with av.open(str(path)) as check:  # the file is variable-rate indeed
        times = [f.pts for f in check.decode(video=0)]
    steps = set(np.diff(times).tolist())
    assert len(times) == FRAMES and len(steps) == 2, steps
    return path


def _index(frames: np.ndarray) -> list[int]:
    """The frame number each decoded frame shows (its grey level / LEVEL, rounded)."""
    return [round(float(f.mean()) / LEVEL) for f in frames]


def test_start_counts_decoded_frames_not_timestamps(tmp_path):
    video = _vfr_video(tmp_path / "vfr.mp4")
    assert _index(read_video(video, start=5, num_frames=1)) == [5]  # the 6th decoded frame
    late = read_video(video, start=16, num_frames=FRAMES - 16)
    assert len(late) == FRAMES - 16 and _index(late[:1]) == [16]
    assert _index(read_video(video, start=40, num_frames=3)) == [40, 41, 42]
    every = read_video(video)
    assert len(every) == FRAMES
    assert np.array_equal(read_video(video, start=16, num_frames=3), every[16:19])
