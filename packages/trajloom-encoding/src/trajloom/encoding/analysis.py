"""Location-variance analysis of appendix B.1.

For one coordinate axis, let ``c[g, t]`` be the value at grid location ``g`` and time
``t`` with visibility ``v[g, t]``. The location baseline is the visibility-weighted
time average ``mu_g``; the motion term is the visibility-weighted temporal variance
``sigma2_g`` around it. The fraction of variance explained by grid location is

    Var_g(mu_g) / (Var_g(mu_g) + Mean_g(sigma2_g)).

Absolute coordinates score high (points sit at different image positions); grid-anchor
offsets remove that location-driven component and score low.
"""

from __future__ import annotations

import torch

from trajloom.encoding.checks import check_tracks, check_visibility
from trajloom.encoding.grid import GridSpec, cell_anchors, normalize

__all__ = ["location_variance_explained"]


def location_variance_explained(
    tracks: torch.Tensor,
    visibility: torch.Tensor,
    spec: GridSpec,
    *,
    offsets: bool = False,
) -> dict[str, float]:
    """Fraction of coordinate variance explained by grid location (appendix B.1).

    Args:
        tracks: ``"b t n 2"`` (or ``"t n 2"``) pixel tracks on the grid of ``spec``.
        visibility: ``"b t n"`` (or ``"t n"``) bool.
        offsets: analyse grid-anchor offsets (normalized coordinate minus the anchor of
            the query pixel) instead of absolute normalized coordinates.

    Returns:
        ``{"x": fraction, "y": fraction}`` over all clips pooled: each ``(clip, point)``
        is one location sample. Locations never visible are left out.
    """
    if tracks.dim() == 3:
        tracks, visibility = tracks[None], visibility[None]
    check_tracks(tracks, "tracks", spec=spec, min_ndim=4)
    check_visibility(visibility, tuple(tracks.shape), "visibility")
    values = normalize(tracks.double(), spec)
    if offsets:
        values = values - cell_anchors(spec, dtype=torch.float64)[:, 0, :]
    w = visibility.double()  # b t n
    count = w.sum(dim=1)  # b n
    seen = count > 0
    if not bool(seen.any()):
        raise ValueError("visibility is false everywhere; no location can be analysed")
    safe = count.clamp_min(1.0)[:, None, :, None]
    mu = (values * w[..., None]).sum(dim=1, keepdim=True) / safe  # b 1 n 2
    sigma2 = (((values - mu) ** 2) * w[..., None]).sum(dim=1) / safe[:, 0]  # b n 2
    mu_seen, sigma2_seen = mu[:, 0][seen], sigma2[seen]  # g 2
    between = mu_seen.var(dim=0, unbiased=False)
    within = sigma2_seen.mean(dim=0)
    frac = between / (between + within).clamp_min(1e-30)
    return {"x": float(frac[0]), "y": float(frac[1])}
