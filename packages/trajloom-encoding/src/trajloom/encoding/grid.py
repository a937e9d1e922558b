"""The grid of query points and the coordinate conventions every package shares.

Conventions (DESIGN.md, "Conventions"):

* Coordinates are ``(x, y)`` in pixels of the working resolution, last axis.
* Tracks are time-major in memory: ``tracks[..., T, N, 2]``, ``visibility[..., T, N]``.
* The grid of ``N = Hg * Wg`` points is row-major (y outer, x inner); point ``(i, j)``
  is seeded at ``(x, y) = (j * s, i * s)``.
* Normalized coordinates are ``2 * p / [W, H] - 1``.
* Pixel ``(i, j)`` has the anchor ``((j + 0.5) / W * 2 - 1, (i + 0.5) / H * 2 - 1)``.

The arithmetic follows the released code operation by operation (``normalize_points``,
the VAE's ``offset_anchor_grid``), so that released checkpoints see the same bits.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch

__all__ = [
    "DEFAULT_GRID",
    "GridSpec",
    "axis_anchors",
    "cell_anchors",
    "denormalize",
    "normalize",
    "pixel_anchors",
    "query_points",
]


@dataclass(frozen=True)
class GridSpec:
    """Working resolution and the stride of the grid of query points.

    The released models work at 832x480 with stride 32: a 15 x 26 grid, N = 390.
    Width and height must be multiples of the stride, because the dense field is
    made of whole ``stride x stride`` cells.
    """

    width: int = 832  # pixels
    height: int = 480  # pixels
    stride: int = 32  # pixels between grid points; also the VAE patch size

    def __post_init__(self) -> None:
        for name in ("width", "height", "stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"GridSpec.{name} must be a positive int, got {value!r}")
        if self.width % self.stride or self.height % self.stride:
            raise ValueError(
                f"GridSpec: width={self.width} and height={self.height} must be multiples of "
                f"stride={self.stride}; resize the video (e.g. to 832x480) or pick a stride "
                "that divides both"
            )

    @property
    def grid_h(self) -> int:
        """Number of grid rows, Hg."""
        return self.height // self.stride

    @property
    def grid_w(self) -> int:
        """Number of grid columns, Wg."""
        return self.width // self.stride

    @property
    def num_points(self) -> int:
        """N = Hg * Wg."""
        return self.grid_h * self.grid_w

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels, the order of the coordinate axis."""
        return (self.width, self.height)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict) -> GridSpec:
        return cls(width=int(d["width"]), height=int(d["height"]), stride=int(d["stride"]))


DEFAULT_GRID = GridSpec()
"""The working geometry of the paper and the released models: 832x480, stride 32 (N = 390)."""


def query_points(
    spec: GridSpec, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Pixel positions where the grid points are seeded.

    Returns ``"n 2"``: ``(x, y) = (j * s, i * s)``, row-major over ``(i, j)``.
    """
    ys = torch.arange(spec.grid_h, device=device, dtype=dtype) * spec.stride
    xs = torch.arange(spec.grid_w, device=device, dtype=dtype) * spec.stride
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy], dim=-1).reshape(-1, 2)


def _scale(spec: GridSpec, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor([spec.width, spec.height], device=like.device, dtype=like.dtype)


def normalize(points: torch.Tensor, spec: GridSpec) -> torch.Tensor:
    """Pixels -> normalized coordinates, ``2 * (p / [W, H]) - 1``.

    ``points: "... 2"`` in pixels, ``(x, y)``. Same operation order as the released
    ``normalize_points`` (divide, double, subtract), hence the same float32 bits.
    """
    if points.shape[-1] != 2:
        raise ValueError(f"points must end in 2 (x, y), got shape {tuple(points.shape)}")
    return 2 * (points / _scale(spec, points)) - 1


def denormalize(coords: torch.Tensor, spec: GridSpec) -> torch.Tensor:
    """Normalized coordinates -> pixels, ``(u + 1) * 0.5 * [W, H]`` (released order)."""
    if coords.shape[-1] != 2:
        raise ValueError(f"coords must end in 2 (x, y), got shape {tuple(coords.shape)}")
    return (coords + 1) * 0.5 * _scale(spec, coords)


def pixel_anchors(
    spec: GridSpec, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Normalized pixel-centre anchors of the full-resolution field, ``"2 h w"`` (x first).

    Built exactly like the released VAE buffer ``offset_anchor_grid`` (float32
    ``linspace(0.5, H - 0.5, H)``, divided by ``[W, H]``, doubled, minus one), then cast.
    """
    ax, ay = axis_anchors(spec, device=device, dtype=dtype)
    yy, xx = torch.meshgrid(ay, ax, indexing="ij")
    return torch.stack([xx, yy], dim=0)


def axis_anchors(
    spec: GridSpec, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """The anchors factorize: x depends on the column only, y on the row only.

    Returns ``(ax "w", ay "h")`` with the same bits as :func:`pixel_anchors`'s rows and
    columns (float32 arithmetic of the released buffer, then cast).
    """
    xs = torch.linspace(0.5, spec.width - 0.5, steps=spec.width, device=device)
    ys = torch.linspace(0.5, spec.height - 0.5, steps=spec.height, device=device)
    ax = (xs / torch.tensor(spec.width, device=device)) * 2.0 - 1.0
    ay = (ys / torch.tensor(spec.height, device=device)) * 2.0 - 1.0
    return ax.to(dtype), ay.to(dtype)


def cell_anchors(
    spec: GridSpec, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Anchors of the pixels inside each cell, in patch order: ``"n (p q) 2"``.

    ``p`` runs over rows and ``q`` over columns of the ``s x s`` cell (``p * s + q``), the
    order of a flattened ``s x s`` patch. These are the same numbers as
    :func:`pixel_anchors` regrouped, so per-cell code sees the dense path's values.
    """
    from einops import rearrange

    dense = pixel_anchors(spec, device=device, dtype=dtype)
    s = spec.stride
    return rearrange(dense, "c (h p) (w q) -> (h w) (p q) c", p=s, q=s)
