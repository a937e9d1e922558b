"""Video IO: round trips, frame ranges, resizing, clear errors, and every shared real clip."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from trajloom.data.video import (
    VideoReadError,
    list_frame_files,
    probe_video,
    read_frames,
    read_frames_dir,
    read_video,
    write_video,
)

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _smooth_clip(t: int, h: int, w: int) -> np.ndarray:
    """A clip of smooth gradients that moves by one pixel per frame (codec friendly)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = []
    for i in range(t):
        r = 128 + 100 * np.sin((xx + 2 * i) / 23.0)
        g = 128 + 100 * np.cos((yy - i) / 19.0)
        b = 128 + 60 * np.sin((xx + yy) / 29.0)
        frames.append(np.stack([r, g, b], axis=-1))
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


def test_mp4_round_trip_shape_and_content(tmp_path):
    clip = _smooth_clip(12, 48, 64)
    path = write_video(tmp_path / "a.mp4", clip, fps=16.0, crf=0)
    info = probe_video(path)
    assert (info.width, info.height, info.num_frames, info.codec) == (64, 48, 12, "h264")
    assert info.fps == pytest.approx(16.0)
    back = read_video(path)
    assert back.shape == clip.shape and back.dtype == np.uint8
    # yuv420p subsamples chroma, so only near equality on smooth content
    assert np.abs(back.astype(int) - clip.astype(int)).mean() < 3.0


def test_frame_range_matches_full_decode(tmp_path):
    clip = _smooth_clip(10, 32, 32)
    path = write_video(tmp_path / "a.mp4", clip)
    full = read_video(path)
    part = read_video(path, start=3, num_frames=4)
    np.testing.assert_array_equal(part, full[3:7])
    np.testing.assert_array_equal(read_video(path, start=7), full[7:])


def test_odd_size_is_padded_not_shifted(tmp_path):
    clip = _smooth_clip(4, 33, 45)
    back = read_video(write_video(tmp_path / "odd.mp4", clip, crf=0))
    assert back.shape == (4, 34, 46, 3)
    assert np.abs(back[:, :33, :45].astype(int) - clip.astype(int)).mean() < 3.0


def test_resize_on_read(tmp_path):
    clip = _smooth_clip(3, 64, 96)
    path = write_video(tmp_path / "a.mp4", clip)
    small = read_video(path, size=(48, 32))
    assert small.shape == (3, 32, 48, 3)
    expected = np.stack(
        [cv2.resize(f, (48, 32), interpolation=cv2.INTER_AREA) for f in read_video(path)]
    )
    np.testing.assert_array_equal(small, expected)


def test_gif_round_trip(tmp_path):
    # four flat colours survive palette quantization exactly
    clip = np.zeros((4, 20, 30, 3), np.uint8)
    for i, c in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]):
        clip[i] = c
    path = write_video(tmp_path / "a.gif", clip, fps=10.0)
    np.testing.assert_array_equal(read_frames(path), clip)


def test_frames_dir_natural_sort_and_range(tmp_path):
    clip = _smooth_clip(12, 16, 24)
    for i, f in enumerate(clip):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    names = [p.name for p in list_frame_files(tmp_path)]
    assert names[:3] == ["f0.png", "f1.png", "f2.png"] and names[-1] == "f11.png"
    np.testing.assert_array_equal(read_frames_dir(tmp_path), clip)
    np.testing.assert_array_equal(read_frames(tmp_path, start=9, num_frames=3), clip[9:12])
    info = probe_video(tmp_path)
    assert (info.width, info.height, info.num_frames, info.codec) == (24, 16, 12, "png")


def test_errors_name_file_and_reason(tmp_path):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(VideoReadError, match=r"missing\.mp4.*does not exist"):
        read_video(missing)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    with pytest.raises(VideoReadError, match=r"garbage\.mp4"):
        read_video(garbage)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoReadError, match="no frames"):
        read_frames(empty)
    path = write_video(tmp_path / "a.mp4", _smooth_clip(5, 16, 16))
    with pytest.raises(VideoReadError, match=r"\[4, 6\).*5 frames"):
        read_video(path, start=4, num_frames=2)
    with pytest.raises(VideoReadError, match="outside the clip"):
        read_video(path, start=5)
    bad = tmp_path / "frames"
    bad.mkdir()
    (bad / "0.jpg").write_bytes(b"broken")
    with pytest.raises(VideoReadError, match=r"0\.jpg.*cannot be decoded"):
        read_frames(bad)
    assert issubclass(VideoReadError, ValueError)


def test_truncated_video_raises_or_reads_prefix(tmp_path):
    path = write_video(tmp_path / "a.mp4", _smooth_clip(20, 64, 64))
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    # an MP4 cut before its index cannot be opened; the error must name the file
    with pytest.raises(VideoReadError, match=r"cut\.mp4"):
        read_video(cut)


def _shared_clips() -> list[Path]:
    if not SHARED.is_dir():
        return []
    clips = sorted((SHARED / "videos").glob("*.mp4")) + sorted(
        (SHARED / "annotated").glob("*/*.mp4")
    )
    clips += [d for d in sorted((SHARED / "annotated").iterdir()) if (d / "frames").is_dir()]
    return clips


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared real data not found at {SHARED}")
@pytest.mark.parametrize("clip", _shared_clips(), ids=lambda p: p.name)
def test_reads_every_shared_clip(clip):
    info = probe_video(clip)
    assert info.width > 0 and info.height > 0 and info.num_frames > 0
    frames = read_frames(clip, size=(128, 96), start=info.num_frames - 4, num_frames=4)
    assert frames.shape == (4, 96, 128, 3) and frames.dtype == np.uint8
    assert frames.std() > 1.0  # real content, not a blank decode


def test_decode_from_bytes_matches_file(tmp_path):
    path = write_video(tmp_path / "a.mp4", _smooth_clip(6, 32, 32))
    from_bytes = read_video(path.read_bytes(), start=2, num_frames=3, name="shard/x.mp4")
    np.testing.assert_array_equal(from_bytes, read_video(path, start=2, num_frames=3))
    with pytest.raises(VideoReadError, match=r"shard/x\.mp4"):
        read_video(b"\x00" * 64, name="shard/x.mp4")


def test_seeking_into_a_long_gop_clip_matches_sequential_decode(tmp_path):
    import av

    clip = _smooth_clip(40, 32, 48)
    path = tmp_path / "gop.mp4"
    # keyframes every 8 frames so that a late start seeks rather than decodes from 0
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        stream.options = {"g": "8", "keyint_min": "8", "crf": "10"}
        for f in clip:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    full = read_video(path)
    for start in (1, 7, 8, 9, 23, 39):
        np.testing.assert_array_equal(
            read_video(path, start=start, num_frames=1), full[start : start + 1]
        )
    np.testing.assert_array_equal(read_video(path, start=17), full[17:])
    with pytest.raises(VideoReadError, match="outside the clip"):
        read_video(path, start=38, num_frames=3)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared real data not found at {SHARED}")
@pytest.mark.parametrize("clip", [c for c in _shared_clips() if c.is_file()], ids=lambda p: p.name)
def test_seek_equals_sequential_on_shared_clips(clip):
    import av

    total = probe_video(clip).num_frames
    with av.open(str(clip)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == total
    for start in (total // 3, total - 3):
        np.testing.assert_array_equal(
            read_video(clip, start=start, num_frames=3), np.stack(frames[start : start + 3])
        )
