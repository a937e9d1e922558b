"""trajloom.data.latents: latent clips with their video and caption context, exactly round-tripped."""

from __future__ import annotations

import numpy as np
import pytest

from trajloom.data.checks import FormatError
from trajloom.data.latents import (
    LatentClip,
    collate_latents,
    decode_latent_clip,
    encode_latent_clip,
)


def _clip(i: int, *, frames: bool = True, text: bool = True) -> LatentClip:
    rng = np.random.default_rng(i)
    return LatentClip(
        id=f"clip-{i}",
        z_hist=rng.standard_normal((3, 8, 4)).astype(np.float32),
        z_fut=rng.standard_normal((3, 8, 4)).astype(np.float32),
        hist_vis=rng.random((3, 8)) > 0.3,
        fut_vis=rng.random((3, 8)) > 0.3,
        caption="a red disc moves left; the camera pans right",
        camera="the camera pans right",
        text_emb=rng.standard_normal(16).astype(np.float32) if text else None,
        video_frames=rng.integers(0, 256, (9, 8, 16, 3), dtype=np.uint8) if frames else None,
    )


def test_context_members_round_trip_exactly():
    clip = _clip(0)
    back = decode_latent_clip(encode_latent_clip(clip))
    for name in ("z_hist", "z_fut", "hist_vis", "fut_vis", "text_emb", "video_frames"):
        np.testing.assert_array_equal(getattr(back, name), getattr(clip, name))
    assert back.video_frames.dtype == np.uint8
    assert (back.caption, back.camera) == (clip.caption, clip.camera)
    assert back.video_latent is None


def test_collate_keeps_frames_uint8_and_refuses_a_mix():
    batch = collate_latents([_clip(0), _clip(1)])
    assert batch.video_frames.shape == (2, 9, 8, 16, 3)
    assert batch.video_frames.dtype.is_floating_point is False
    assert batch.text_emb.shape == (2, 16)
    with pytest.raises(ValueError, match=r"video_frames.*missing in \['clip-1'\]"):
        collate_latents([_clip(0), _clip(1, frames=False)])


def test_bad_context_frames_are_refused():
    clip = _clip(0)
    with pytest.raises(FormatError, match="video_frames must be 't h w 3' uint8"):
        LatentClip(**{**clip.__dict__, "video_frames": clip.video_frames.astype(np.float32)})
