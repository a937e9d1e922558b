"""TrajLoom-VAE training losses (paper §3.2, eqs. 1-5; appendix A.1).

Pure functions on the model's outputs. The reconstruction ``recon`` is in patch layout
``"b t n k 2"``: ``k = s * s`` pixels per cell (what :meth:`TrajLoomVAE.decode` gives) or
``k = 1`` (the query pixel only). The target is per cell, ``"b t n 2"``: the field the
release trains on is constant on each cell, so every pixel of cell ``n`` has the
target of grid point ``n`` and is visible when that point is. Sums over the ``k``
pixels against a per-cell target are the released dense sums, without the dense field.

Choices where the paper's text lost its symbols (documented here, tested in
tests/vae/test_losses.py):

* The consistency terms use the reconstruction's penalty, Huber with ``delta``
  per coordinate, so that the paper's weights 0.1 and 0.2 act on terms of the
  reconstruction's scale.
* They are computed on every pixel of the cells (``consistency_pixels="patch"``, the
  default), pairing each pixel with the same pixel of the neighbouring cell (hop ``h``
  = ``h`` cells = ``h * s`` pixels) or of the next frame; ``"query"`` uses only the
  query pixel of each cell. Hops are counted in grid cells, because inside a cell the
  target is constant and a pixel hop would only ask for a flat patch.
* Hops ``(1, 2, 4)`` with weights ``(1, 0.5, 0.25)`` (weight = 1 / distance), in both
  grid directions; each term is the weighted sum of errors over valid pairs divided by
  the weighted number of valid pairs.
* Every term is per sample (normalized by that sample's valid count, as the release
  pools its reconstruction term) and then averaged over the batch; a sample with
  nothing visible contributes 0, never NaN.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

from trajloom.encoding import GridSpec

__all__ = [
    "VAELossConfig",
    "VAELosses",
    "kl_loss",
    "masked_huber",
    "neighbor_consistency",
    "vae_losses",
    "velocity_consistency",
]


@dataclass(frozen=True)
class VAELossConfig:
    """Weights and switches of the VAE objective (paper eq. 5)."""

    beta: float = 5e-5  # KL weight
    huber_delta: float = 1.0
    velocity_weight: float = 0.1  # lambda_vel, eq. 3
    neighbor_weight: float = 0.2  # lambda_nb, eq. 3
    hops: tuple[int, ...] = (1, 2, 4)  # neighbour distances in grid cells
    hop_weights: tuple[float, ...] = (1.0, 0.5, 0.25)
    use_regularizer: bool = True  # False: the paper's "w/o regularizer" ablation
    consistency_pixels: str = "patch"  # "patch" (every pixel) or "query" (query pixel only)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hops", tuple(int(h) for h in self.hops))
        object.__setattr__(self, "hop_weights", tuple(float(w) for w in self.hop_weights))
        if len(self.hops) != len(self.hop_weights):
            raise ValueError(
                f"VAELossConfig: {len(self.hops)} hops but {len(self.hop_weights)} hop_weights"
            )
        if any(h < 1 for h in self.hops) or any(w < 0 for w in self.hop_weights):
            raise ValueError(
                f"VAELossConfig: hops must be >= 1 and weights >= 0, got {self.hops}, "
                f"{self.hop_weights}"
            )
        for name in ("beta", "velocity_weight", "neighbor_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"VAELossConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if not self.huber_delta > 0:
            raise ValueError(f"VAELossConfig.huber_delta must be > 0, got {self.huber_delta!r}")
        if self.consistency_pixels not in ("patch", "query"):
            raise ValueError(
                "VAELossConfig.consistency_pixels must be 'patch' or 'query', got "
                f"{self.consistency_pixels!r}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class VAELosses:
    """Batch-mean loss terms; ``total`` is what to minimize."""

    total: torch.Tensor
    recon: torch.Tensor  # masked Huber, eq. 4 (= -ll of the release)
    kl: torch.Tensor  # mean KL per latent element
    velocity: torch.Tensor  # eq. 1
    neighbor: torch.Tensor  # eq. 2


def _check(recon: torch.Tensor, target: torch.Tensor, visibility: torch.Tensor) -> None:
    if recon.dim() != 5 or recon.shape[-1] != 2:
        raise ValueError(f"recon must be 'b t n k 2', got shape {tuple(recon.shape)}")
    if tuple(target.shape) != (*recon.shape[:3], 2):
        raise ValueError(
            f"target must be 'b t n 2' = {(*recon.shape[:3], 2)} to match recon, "
            f"got {tuple(target.shape)}"
        )
    if visibility.dtype != torch.bool or tuple(visibility.shape) != tuple(recon.shape[:3]):
        raise ValueError(
            f"visibility must be bool 'b t n' = {tuple(recon.shape[:3])}, got "
            f"{visibility.dtype} {tuple(visibility.shape)}"
        )


def _huber_per_cell(diff: torch.Tensor, delta: float) -> torch.Tensor:
    """Huber of ``diff "... k 2"`` summed over the k pixels and 2 coordinates: ``"..."``."""
    return F.huber_loss(diff, torch.zeros_like(diff), reduction="none", delta=delta).sum(
        dim=(-2, -1)
    )


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` where ``den > 0``, else 0 (finite, with finite gradients)."""
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(num.dtype).tiny), 0.0)


def masked_huber(
    recon: torch.Tensor, target: torch.Tensor, visibility: torch.Tensor, delta: float = 1.0
) -> torch.Tensor:
    """Visibility-masked Huber reconstruction loss (eq. 4), per sample ``"b"``.

    The release's pooling: Huber summed over visible pixels and both coordinates,
    divided by ``2 x`` the number of visible pixels (at least 1).
    """
    _check(recon, target, visibility)
    per_cell = _huber_per_cell(recon - target.unsqueeze(-2), delta)  # "b t n"
    m = visibility.to(per_cell.dtype)
    count = m.sum(dim=(1, 2)) * recon.shape[-2] * 2
    return (per_cell * m).sum(dim=(1, 2)) / count.clamp_min(1.0)


def kl_loss(posterior) -> torch.Tensor:
    """``KL(q(z|x) || N(0, I))`` averaged over (t, n, c), per sample ``"b"`` (as released)."""
    return posterior.kl().mean(dim=(1, 2, 3))


def velocity_consistency(
    recon: torch.Tensor, target: torch.Tensor, visibility: torch.Tensor, delta: float = 1.0
) -> torch.Tensor:
    """Temporal velocity consistency (eq. 1), per sample ``"b"``.

    Penalizes ``(x̂_{t+1} - x̂_t) - (x_{t+1} - x_t)`` where the point is visible at both t
    and t + 1, normalized by the number of such (pixel) pairs and coordinates.
    """
    _check(recon, target, visibility)
    v_hat = recon[:, 1:] - recon[:, :-1]
    v = (target[:, 1:] - target[:, :-1]).unsqueeze(-2)
    per_cell = _huber_per_cell(v_hat - v, delta)
    m = (visibility[:, 1:] & visibility[:, :-1]).to(per_cell.dtype)
    count = m.sum(dim=(1, 2)) * recon.shape[-2] * 2
    return _ratio((per_cell * m).sum(dim=(1, 2)), count)


def neighbor_consistency(
    recon: torch.Tensor,
    target: torch.Tensor,
    visibility: torch.Tensor,
    spec: GridSpec,
    hops: tuple[int, ...] = (1, 2, 4),
    hop_weights: tuple[float, ...] = (1.0, 0.5, 0.25),
    delta: float = 1.0,
) -> torch.Tensor:
    """Multiscale spatial neighbour consistency (eq. 2), per sample ``"b"``.

    For each hop ``h`` and each grid direction (right, down), penalizes
    ``(x̂_{p+h} - x̂_p) - (x_{p+h} - x_p)`` where both cells are visible, weighted by the
    hop's weight; divided by the weighted number of valid pairs.
    """
    _check(recon, target, visibility)
    gh, gw = spec.grid_h, spec.grid_w
    if recon.shape[2] != gh * gw:
        raise ValueError(f"recon has n={recon.shape[2]} cells, the grid has {gh}x{gw}")
    r = rearrange(recon, "b t (h w) k c -> b t h w k c", h=gh)
    x = rearrange(target, "b t (h w) c -> b t h w 1 c", h=gh)
    vis = rearrange(visibility, "b t (h w) -> b t h w", h=gh)
    num = recon.new_zeros(recon.shape[0])
    den = recon.new_zeros(recon.shape[0])
    for hop, weight in zip(hops, hop_weights, strict=True):
        for dim, size in ((2, gh), (3, gw)):
            if hop >= size or weight == 0:
                continue

            def fwd(a: torch.Tensor, dim: int = dim, hop: int = hop) -> torch.Tensor:
                return a.narrow(dim, hop, a.shape[dim] - hop) - a.narrow(dim, 0, a.shape[dim] - hop)

            per_cell = _huber_per_cell(fwd(r) - fwd(x), delta)  # "b t h' w'"
            m = vis.narrow(dim, hop, size - hop) & vis.narrow(dim, 0, size - hop)
            m = m.to(per_cell.dtype)
            num = num + weight * (per_cell * m).sum(dim=(1, 2, 3))
            den = den + weight * m.sum(dim=(1, 2, 3)) * recon.shape[-2] * 2
    return _ratio(num, den)


def vae_losses(
    recon: torch.Tensor,
    target: torch.Tensor,
    visibility: torch.Tensor,
    posterior,
    spec: GridSpec,
    config: VAELossConfig | None = None,
) -> VAELosses:
    """The full objective (eq. 5): recon + beta KL + lambda_vel L_vel + lambda_nb L_nb.

    Args:
        recon: ``"b t n k 2"`` decoded normalized coordinates (patch layout).
        target: ``"b t n 2"`` normalized coordinates of the grid points (the encoder input).
        visibility: ``"b t n"`` bool.
        posterior: the :class:`~trajloom.vae.model.DiagonalGaussian` of the encoder.
        spec: the grid.
        config: weights and switches; ``use_regularizer=False`` drops both consistency
            terms from ``total`` (they are still reported, without gradient).
    """
    cfg = config or VAELossConfig()
    rec = masked_huber(recon, target, visibility, cfg.huber_delta).mean()
    kl = kl_loss(posterior).mean()
    total = rec + cfg.beta * kl
    cons = recon if cfg.consistency_pixels == "patch" else recon[..., :1, :]
    with torch.set_grad_enabled(torch.is_grad_enabled() and cfg.use_regularizer):
        vel = velocity_consistency(cons, target, visibility, cfg.huber_delta).mean()
        nb = neighbor_consistency(
            cons, target, visibility, spec, cfg.hops, cfg.hop_weights, cfg.huber_delta
        ).mean()
    if cfg.use_regularizer:
        total = total + cfg.velocity_weight * vel + cfg.neighbor_weight * nb
    return VAELosses(total=total, recon=rec, kl=kl, velocity=vel, neighbor=nb)
