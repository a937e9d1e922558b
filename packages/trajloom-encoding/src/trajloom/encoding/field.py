"""Trajectory fields (paper §3.1): rasterization, grid-anchor offsets, and the per-cell form.

The released model consumes a dense field ``"b t 2 h w"`` built by copying each grid
point's normalized track into its whole ``s x s`` cell. That field is piecewise
constant, so everything a model computes from it can be computed from the per-cell
values ``"b t n 2"`` (the normalized tracks themselves) plus fixed per-position terms:

* a patch embedding (``Conv2d`` with kernel = stride = ``s``) of the field is
  ``value @ W.sum(p, q) + bias`` — and, on the offset field, minus the embedding of the
  anchors, which depends only on the cell (:func:`patch_embed_cells`);
* a masked loss over visible pixels counts each visible cell ``s * s`` times
  (:func:`broadcast_cells` gives the target in patch layout as a view, no copy).

The dense functions stay for compatibility with the released code and for tests
that prove the per-cell path gives the same numbers.
"""

from __future__ import annotations

import torch
from einops import rearrange

from trajloom.encoding.checks import check_tracks, check_visibility
from trajloom.encoding.grid import GridSpec, axis_anchors, normalize, pixel_anchors

__all__ = [
    "anchor_patch_embedding",
    "broadcast_cells",
    "decode_offsets",
    "encode_offsets",
    "patch_embed_cells",
    "patch_embed_dense",
    "patchify",
    "rasterize",
    "read_back",
    "read_back_patches",
    "unpatchify",
]


def rasterize(
    tracks: torch.Tensor,
    visibility: torch.Tensor,
    spec: GridSpec,
    *,
    normalized: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse grid tracks -> dense field and mask (the released ``flat_to_dense_raw``).

    Args:
        tracks: ``"b t n 2"`` pixel coordinates ``(x, y)`` of the ``N = Hg * Wg`` grid points.
        visibility: ``"b t n"`` bool.
        spec: the grid; ``n`` must equal ``spec.num_points``.
        normalized: return ``2 p / [W, H] - 1`` (the model's input) instead of pixels.

    Returns:
        field ``"b t 2 h w"`` (channel 0 = x) and mask ``"b t h w"`` bool, each cell of
        ``s x s`` pixels holding its grid point's value.
    """
    check_tracks(tracks, "tracks", spec=spec, min_ndim=4)
    check_visibility(visibility, tuple(tracks.shape), "visibility")
    values = normalize(tracks, spec) if normalized else tracks
    s = spec.stride
    field = rearrange(values, "b t (h w) c -> b t c h w", h=spec.grid_h, w=spec.grid_w)
    field = field.repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1)
    mask = rearrange(visibility, "b t (h w) -> b t h w", h=spec.grid_h, w=spec.grid_w)
    mask = mask.repeat_interleave(s, dim=-2).repeat_interleave(s, dim=-1)
    return field, mask


def read_back(field: torch.Tensor, spec: GridSpec) -> torch.Tensor:
    """Dense field ``"b t 2 h w"`` -> values at the query pixels, ``"b t n 2"``.

    Reads ``field[..., y, x]`` at the integer query pixel ``(x, y) = (j s, i s)``, as the
    released decoder does.
    """
    if field.dim() < 3 or field.shape[-3] != 2:
        raise ValueError(f"field must be '... 2 h w', got shape {tuple(field.shape)}")
    if tuple(field.shape[-2:]) != (spec.height, spec.width):
        raise ValueError(
            f"field is {field.shape[-1]}x{field.shape[-2]} (w x h) but the grid expects "
            f"{spec.width}x{spec.height}"
        )
    s = spec.stride
    return rearrange(field[..., ::s, ::s], "... c h w -> ... (h w) c")


def encode_offsets(field: torch.Tensor, spec: GridSpec) -> torch.Tensor:
    """Absolute normalized field ``"... 2 h w"`` -> grid-anchor offsets (field minus anchors).

    Same arithmetic as the released VAE (``x - offset_anchor_grid``). The inverse
    :func:`decode_offsets` is exact for float32 coordinates encoded in float64 (the
    difference of two float32 numbers fits in float64) and within two roundings in
    float32.
    """
    anchors = pixel_anchors(spec, device=field.device, dtype=field.dtype)
    return field - anchors


def decode_offsets(offsets: torch.Tensor, spec: GridSpec) -> torch.Tensor:
    """Grid-anchor offsets ``"... 2 h w"`` -> absolute normalized field (offsets plus anchors)."""
    anchors = pixel_anchors(spec, device=offsets.device, dtype=offsets.dtype)
    return offsets + anchors


def patchify(field: torch.Tensor, spec: GridSpec) -> torch.Tensor:
    """Dense ``"... c h w"`` -> patch layout ``"... n (p q) c"`` (row-major cells, row-major pixels)."""
    s = spec.stride
    return rearrange(field, "... c (h p) (w q) -> ... (h w) (p q) c", p=s, q=s)


def unpatchify(patches: torch.Tensor, spec: GridSpec) -> torch.Tensor:
    """Patch layout ``"... n (p q) c"`` -> dense ``"... c h w"``; inverse of :func:`patchify`."""
    s = spec.stride
    return rearrange(
        patches, "... (h w) (p q) c -> ... c (h p) (w q)", h=spec.grid_h, w=spec.grid_w, p=s, q=s
    )


def broadcast_cells(values: torch.Tensor, spec: GridSpec) -> torch.Tensor:
    """Per-cell ``"... n c"`` -> patch layout ``"... n (p q) c"`` as a view (no copy).

    ``patchify(rasterize(...))`` equals this, without building the ``h x w`` field.
    """
    s2 = spec.stride * spec.stride
    return values.unsqueeze(-2).expand(*values.shape[:-1], s2, values.shape[-1])


def read_back_patches(patches: torch.Tensor) -> torch.Tensor:
    """Patch layout ``"... n (p q) c"`` -> the query pixel of each cell, ``"... n c"``.

    The query pixel ``(j s, i s)`` is the top-left pixel of cell ``(i, j)``: ``p = q = 0``.
    """
    return patches[..., 0, :]


def patch_embed_dense(
    field: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: GridSpec
) -> torch.Tensor:
    """Reference patch embedding of a dense field: ``Conv2d(k = stride = s)`` then flatten.

    ``field: "b c h w"``, ``weight: "d c s s"`` -> ``"b n d"``. What timm's ``PatchEmbed``
    computes; kept to prove :func:`patch_embed_cells` equal to it.
    """
    out = torch.nn.functional.conv2d(field, weight, bias, stride=spec.stride)
    return rearrange(out, "b d h w -> b (h w) d")


def anchor_patch_embedding(weight: torch.Tensor, spec: GridSpec) -> torch.Tensor:
    """The patch embedding (without bias) of the anchor field, per cell: ``"n d"``.

    The x anchor depends only on the pixel column and the y anchor only on the row, so
    the sum over a cell factorizes: ``sum_q (sum_p W[d, 0, p, q]) ax[j s + q] +
    sum_p (sum_q W[d, 1, p, q]) ay[i s + p]``; cost ``O(d s (Hg + Wg))``.
    """
    s = spec.stride
    ax, ay = axis_anchors(spec, device=weight.device, dtype=weight.dtype)
    ax = rearrange(ax, "(w q) -> w q", q=s)  # x anchor of each pixel column, per cell column
    ay = rearrange(ay, "(h p) -> h p", p=s)  # y anchor of each pixel row, per cell row
    term_x = torch.einsum("dq,wq->wd", weight[:, 0].sum(dim=1), ax)
    term_y = torch.einsum("dp,hp->hd", weight[:, 1].sum(dim=2), ay)
    return rearrange(term_y[:, None, :] + term_x[None, :, :], "h w d -> (h w) d")


def patch_embed_cells(
    values: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    spec: GridSpec,
    *,
    offsets: bool = True,
) -> torch.Tensor:
    """Patch embedding of the (offset) field computed from per-cell values only.

    Args:
        values: ``"... n 2"`` normalized absolute coordinates of the grid points.
        weight: ``"d 2 s s"`` the patch-embedding kernel (a ``Conv2d`` weight).
        bias: ``"d"`` or None.
        offsets: embed the grid-anchor offset field (the paper's model) rather than the
            absolute field (the "w/o offset" ablation).

    Returns:
        ``"... n d"``, equal (to float rounding) to :func:`patch_embed_dense` applied to
        ``encode_offsets(rasterize(...))`` — with ``s * s`` fewer multiply-adds and no
        ``h x w`` field in memory.
    """
    if values.shape[-1] != 2 or values.shape[-2] != spec.num_points:
        raise ValueError(
            f"values must be '... {spec.num_points} 2' for this grid, got {tuple(values.shape)}"
        )
    out = values @ weight.sum(dim=(-2, -1)).t()
    if offsets:
        out = out - anchor_patch_embedding(weight, spec)
    if bias is not None:
        out = out + bias
    return out
