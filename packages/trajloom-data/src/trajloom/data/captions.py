"""Which caption an evaluation gives a model: nothing from the future.

Training captions describe the whole clip (paper app. E.2: object motion and the camera
phrase over history *and* future), as the paper trains. At evaluation such a caption
would hand the model part of the answer, so evaluations choose a policy:

* ``history`` (default): the camera phrase of the history window alone, estimated from
  the history tracks (``trajloom.data.camera``), in the training captions' vocabulary,
  e.g. "The camera pans left slowly." Object descriptions, which span the clip, are left
  out;
* ``clip``: the clip's own caption (whole window): an oracle, reported as such;
* ``none``: the empty caption (the null embedding caption dropout trains).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from trajloom.data.camera import camera_phrase, estimate_camera_motion
from trajloom.data.clip import Clip

__all__ = ["CAPTION_POLICIES", "evaluation_caption", "history_caption", "with_caption_policy"]

CAPTION_POLICIES = ("history", "clip", "none")


def history_caption(hist_tracks: np.ndarray, hist_vis: np.ndarray, size: tuple[int, int]) -> str:
    """The camera phrase of the history window as a caption ("Static camera.").

    ``hist_tracks`` "th n 2" pixels of a ``size = (width, height)`` frame, ``hist_vis``
    "th n" bool. Reads nothing after the last history frame.
    """
    phrase = camera_phrase(estimate_camera_motion(hist_tracks, hist_vis, size))
    return phrase[0].upper() + phrase[1:] + "."


def evaluation_caption(clip: Clip, policy: str, size: tuple[int, int]) -> str:
    """The caption of ``clip`` under ``policy`` (module docstring); ``size`` is the
    (width, height) of the clip's pixel frame."""
    if policy not in CAPTION_POLICIES:
        raise ValueError(f"caption policy must be one of {CAPTION_POLICIES}, got {policy!r}")
    if policy == "clip":
        return clip.caption
    if policy == "none":
        return ""
    return history_caption(clip.hist_tracks, clip.hist_vis, size)


def with_caption_policy(clip: Clip, policy: str, size: tuple[int, int]) -> Clip:
    """A copy of ``clip`` whose caption follows ``policy`` (arrays shared, not copied)."""
    return dataclasses.replace(clip, caption=evaluation_caption(clip, policy, size))
