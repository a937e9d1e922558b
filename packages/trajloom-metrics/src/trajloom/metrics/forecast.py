"""Multi-sample forecasting metrics: best-of-K ADE / FDE, diversity, energy score (pixels).

A generator draws K futures of the same video. With `samples [K, t, n, 2]` and the truth
`gt [t, n, 2]` (x, y pixels), `visibility [t, n]` the ground-truth visibility of the
future frames (None: every frame visible):

- Per sample k and point i, with `e[k, t, i] = ||samples[k, t, i] - gt[t, i]||_2`:
  `ADE[k, i]` is the mean of `e[k, :, i]` over the frames where point i is visible, and
  `FDE[k, i]` is `e[k, t_last(i), i]` at the last frame where point i is visible.
  Points never visible in the future are left out.
- Per sample, the video-level errors are the means over the points kept:
  `ADE[k] = mean_i ADE[k, i]`, `FDE[k] = mean_i FDE[k, i]`.
- `minADE_K = min_k ADE[k]` and `minFDE_K = min_k FDE[k]`, each minimised on its own
  (the best-of-K convention of the trajectory-forecasting literature, e.g. Social GAN:
  the minimum is over whole sampled trajectory sets of a video, not per point).
- Diversity: the mean over the `K (K - 1) / 2` pairs `k < l` of the mean over visible
  `(t, i)` of `||samples[k, t, i] - samples[l, t, i]||_2`; it needs K >= 2.
- Energy score (Gneiting & Raftery 2007), a proper score of the K futures as a
  distribution, where minADE_K rewards mere spread: per visible `(t, i)`,
  `ES = 1/K sum_k ||x_k - y|| - 1/(2 K (K - 1)) sum_{k != l} ||x_k - x_l||` (the fair,
  unbiased estimator; the second term is 0 for K = 1), averaged like ADE (per point over
  its visible frames, then over points). One sample gives its ADE; K copies of one future
  give that future's ADE; lower is better. It scores each point's 2-D marginal, not the
  joint distribution of the whole field.

Over a dataset (:class:`ForecastAccumulator`) each value is a mean of per-video values,
every video weighted equally; a video with no visible future point is left out (counted).
Errors are computed in float64.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trajloom.metrics._checks import as_tracks, as_visibility

__all__ = [
    "ForecastAccumulator",
    "ForecastResult",
    "best_of_k",
    "energy_score",
    "forecast_summary",
    "mean_ade",
    "sample_diversity",
    "sample_errors",
]


def _samples(samples: object) -> np.ndarray:
    arr = as_tracks("samples", samples, min_ndim=4)
    if arr.ndim != 4:
        raise ValueError(
            f"samples must have shape [K, T, N, 2] (K futures of one video, pixels); got "
            f"shape {arr.shape}"
        )
    if arr.shape[0] < 1:
        raise ValueError("samples must hold at least one future (K >= 1); got K = 0")
    if not np.isfinite(arr).all():
        raise ValueError("samples hold NaN or infinite coordinates; a future must be finite")
    return arr.astype(np.float64)


def _mask(visibility: object | None, shape: tuple[int, ...]) -> np.ndarray:
    """`[t, n]` bool visibility for tracks of shape `shape = (t, n, 2)`."""
    if visibility is None:
        return np.ones(shape[:-1], dtype=bool)
    return as_visibility("visibility", visibility, shape)


def _checked(
    samples: object, gt_tracks: object, visibility: object | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Samples `[K, t, n, 2]` and truth `[t, n, 2]` as float64, visibility `[t, n]` bool;
    ValueError for shapes that disagree or non-finite coordinates."""
    s = _samples(samples)
    gt = as_tracks("gt_tracks", gt_tracks).astype(np.float64)
    if gt.shape != s.shape[1:]:
        raise ValueError(
            f"gt_tracks must have the shape of one sample {s.shape[1:]} (samples "
            f"{s.shape}); got {gt.shape}"
        )
    if not np.isfinite(gt).all():
        raise ValueError("gt_tracks hold NaN or infinite coordinates; the truth must be finite")
    return s, gt, _mask(visibility, gt.shape)


def sample_errors(
    samples: np.ndarray, gt_tracks: np.ndarray, visibility: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """ADE and FDE of each of K futures of one video, in pixels (module docstring).

    Args:
        samples: `[K, t, n, 2]` predicted `(x, y)` pixels, K futures of one video.
        gt_tracks: `[t, n, 2]` true pixels of the same frames and points.
        visibility: `[t, n]` ground-truth visibility (bool, or 0/1/probability
            thresholded at 0.5); None counts every frame as visible.

    Returns:
        `(ade, fde)`, each `[K]` float64: per sample, the mean over points visible in at
        least one frame of the per-point ADE / FDE. NaN (with a `RuntimeWarning`) when no
        point is visible.

    Raises:
        ValueError: shapes that disagree, or non-finite coordinates.
    """
    s, gt, vis = _checked(samples, gt_tracks, visibility)
    k = s.shape[0]
    seen = vis.any(axis=0)  # [n]
    if not seen.any():
        warnings.warn(
            "forecast errors: no point is visible in any future frame; ADE/FDE are NaN",
            RuntimeWarning,
            stacklevel=2,
        )
        nan = np.full(k, np.nan)
        return nan, nan.copy()
    err = np.sqrt(np.sum((s - gt[None]) ** 2, axis=-1))  # [K, t, n]
    count = vis.sum(axis=0)  # [n]
    ade_points = np.where(vis[None], err, 0.0).sum(axis=1)[:, seen] / count[seen]  # [K, m]
    t = vis.shape[0]
    last = t - 1 - np.argmax(vis[::-1], axis=0)  # [n] last visible frame of each point
    fde_points = err[:, last, np.arange(vis.shape[1])][:, seen]  # [K, m]
    return ade_points.mean(axis=1), fde_points.mean(axis=1)


def mean_ade(
    samples: np.ndarray, gt_tracks: np.ndarray, visibility: np.ndarray | None = None
) -> float:
    """The mean over K futures of their ADE (:func:`sample_errors`), pixels; NaN, without a
    warning, when nothing is visible. For one (deterministic) future: its ADE."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ade, _ = sample_errors(samples, gt_tracks, visibility)
    return float("nan") if np.isnan(ade).all() else float(np.mean(ade))


def best_of_k(
    samples: np.ndarray, gt_tracks: np.ndarray, visibility: np.ndarray | None = None
) -> tuple[float, float]:
    """`(minADE_K, minFDE_K)` of one video in pixels: the minima over the K futures of the
    video-level errors of :func:`sample_errors` (each minimised on its own)."""
    ade, fde = sample_errors(samples, gt_tracks, visibility)
    if np.isnan(ade).all():
        return float("nan"), float("nan")
    return float(np.min(ade)), float(np.min(fde))


def forecast_summary(
    samples: np.ndarray, gt_tracks: np.ndarray, visibility: np.ndarray | None = None
) -> dict[str, Any]:
    """The errors of K futures of one video, as plain JSON-ready values (pixels).

    ``ade`` and ``fde``: lists of K (:func:`sample_errors`); ``min_ade`` and ``min_fde``
    (:func:`best_of_k`); ``diversity`` (:func:`sample_diversity`, None for K = 1);
    ``energy_score`` (:func:`energy_score`). NaN
    (nothing visible) becomes None, without a warning: a report shows it as empty.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ade, fde = sample_errors(samples, gt_tracks, visibility)
        diversity = sample_diversity(samples, visibility) if len(samples) > 1 else None
        energy = energy_score(samples, gt_tracks, visibility)

    def plain(value: float | None) -> float | None:
        return None if value is None or np.isnan(value) else float(value)

    seen = not np.isnan(ade).all()
    return {
        "ade": [plain(a) for a in ade],
        "fde": [plain(f) for f in fde],
        "min_ade": plain(float(np.nanmin(ade))) if seen else None,
        "min_fde": plain(float(np.nanmin(fde))) if seen else None,
        "diversity": plain(diversity),
        "energy_score": plain(energy),
    }


def sample_diversity(samples: np.ndarray, visibility: np.ndarray | None = None) -> float:
    """Mean pairwise distance between K futures of one video, in pixels.

    Args:
        samples: `[K, t, n, 2]` predicted pixels, K >= 2.
        visibility: `[t, n]` ground-truth visibility; only visible `(t, i)` count. None:
            all.

    Returns:
        The mean over pairs `k < l` of the mean over visible `(t, i)` of
        `||samples[k, t, i] - samples[l, t, i]||_2`; NaN (with a `RuntimeWarning`) when
        nothing is visible.

    Raises:
        ValueError: K < 2, bad shapes or non-finite coordinates.
    """
    s = _samples(samples)
    k = s.shape[0]
    if k < 2:
        raise ValueError(f"sample_diversity needs K >= 2 futures; got samples of shape {s.shape}")
    vis = _mask(visibility, s.shape[1:])
    if not vis.any():
        warnings.warn(
            "sample diversity: nothing is visible; diversity is NaN",
            RuntimeWarning,
            stacklevel=2,
        )
        return float("nan")
    pts = s[:, vis]  # [K, m, 2]
    total = 0.0
    for a in range(k - 1):  # K is small; one pair block at a time keeps memory at [K, m]
        d = np.sqrt(np.sum((pts[a + 1 :] - pts[a][None]) ** 2, axis=-1))  # [K-a-1, m]
        total += float(d.mean(axis=1).sum())
    return total / (k * (k - 1) / 2)


def energy_score(
    samples: np.ndarray, gt_tracks: np.ndarray, visibility: np.ndarray | None = None
) -> float:
    """The energy score of K futures of one video against the truth, in pixels.

    Args:
        samples: `[K, t, n, 2]` predicted `(x, y)` pixels, K >= 1.
        gt_tracks: `[t, n, 2]` true pixels.
        visibility: `[t, n]` ground-truth visibility; None: every frame visible.

    Returns:
        The fair energy score of the module docstring, averaged per point over its visible
        frames and then over points; NaN (with a `RuntimeWarning`) when nothing is visible.

    Raises:
        ValueError: shapes that disagree, or non-finite coordinates.
    """
    s, gt, vis = _checked(samples, gt_tracks, visibility)
    seen = vis.any(axis=0)
    if not seen.any():
        warnings.warn(
            "energy score: no point is visible in any future frame; it is NaN",
            RuntimeWarning,
            stacklevel=2,
        )
        return float("nan")
    k = s.shape[0]
    score = np.sqrt(np.sum((s - gt[None]) ** 2, axis=-1)).mean(axis=0)  # [t, n]
    if k > 1:
        spread = np.zeros(gt.shape[:-1])
        for a in range(k - 1):  # pairs k < l, one block at a time: memory stays [K, t, n]
            spread += np.sqrt(np.sum((s[a + 1 :] - s[a][None]) ** 2, axis=-1)).sum(axis=0)
        score = score - spread / (k * (k - 1))  # sum over k != l is twice the k < l sum
    per_point = np.where(vis, score, 0.0).sum(axis=0)[seen] / vis.sum(axis=0)[seen]
    return float(per_point.mean())


@dataclass(frozen=True)
class ForecastResult:
    """Dataset values in pixels (means of per-video values; None where none was defined)."""

    min_ade: float | None
    min_fde: float | None
    diversity: float | None
    energy_score: float | None
    num_samples: int
    num_videos: int
    num_videos_scored: int


@dataclass
class ForecastAccumulator:
    """Streams best-of-K errors and diversity over videos, one video in memory at a time.

    `update(samples, gt, vis)` per video (`gt` may be None: diversity only), then
    `result()`. `per_video` keeps each video's values.
    """

    num_samples: int | None = None
    ade_values: list[float] = field(default_factory=list)
    fde_values: list[float] = field(default_factory=list)
    diversity_values: list[float] = field(default_factory=list)
    energy_values: list[float] = field(default_factory=list)
    per_video: list[dict[str, Any]] = field(default_factory=list)

    def update(
        self,
        samples: np.ndarray,
        gt_tracks: np.ndarray | None,
        visibility: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Add one video: `samples [K, t, n, 2]`, `gt_tracks [t, n, 2]` or None, and
        `visibility [t, n]` or None. Returns its `min_ade`, `min_fde`, `best_sample`
        (index of the lowest ADE), `diversity` and `energy_score` (NaN where undefined).

        Raises:
            ValueError: bad shapes, non-finite coordinates, or a K that differs from the
                videos before (best-of-K of different K cannot be averaged).
        """
        s = np.asarray(samples)
        k = s.shape[0] if s.ndim == 4 else None
        if self.num_samples is not None and k is not None and k != self.num_samples:
            raise ValueError(
                f"samples hold K = {k} futures but earlier videos held K = {self.num_samples};"
                " score every video with the same number of samples"
            )
        out: dict[str, Any] = {
            "min_ade": float("nan"),
            "min_fde": float("nan"),
            "best_sample": None,
            "diversity": float("nan"),
            "energy_score": float("nan"),
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if gt_tracks is not None:
                ade, fde = sample_errors(s, gt_tracks, visibility)
                if not np.isnan(ade).all():
                    out.update(
                        min_ade=float(ade.min()),
                        min_fde=float(fde.min()),
                        best_sample=int(np.argmin(ade)),
                        energy_score=energy_score(s, gt_tracks, visibility),
                    )
            else:
                _samples(s)
            if s.shape[0] >= 2:
                out["diversity"] = sample_diversity(s, visibility)
        self.num_samples = s.shape[0]
        if gt_tracks is not None and np.isfinite(out["min_ade"]):
            self.ade_values.append(out["min_ade"])
            self.fde_values.append(out["min_fde"])
            self.energy_values.append(out["energy_score"])
        if np.isfinite(out["diversity"]):
            self.diversity_values.append(out["diversity"])
        self.per_video.append(out)
        return out

    def result(self) -> ForecastResult:
        """Means over videos (None where no video gave a value)."""

        def mean(values: list[float]) -> float | None:
            return float(np.mean(values)) if values else None

        return ForecastResult(
            min_ade=mean(self.ade_values),
            min_fde=mean(self.fde_values),
            diversity=mean(self.diversity_values),
            energy_score=mean(self.energy_values),
            num_samples=self.num_samples or 0,
            num_videos=len(self.per_video),
            num_videos_scored=len(self.ade_values),
        )
