"""TrajLoom's trajectory conventions and the grid-anchor offset representation (paper §3.1).

One module for the conventions every TrajLoom package shares: the grid of query
points, normalized coordinates, pixel-centre anchors, dense trajectory fields, their
per-cell ("compact") form, layout converters, and the appendix B.1 analysis.
"""

from trajloom.encoding.analysis import location_variance_explained
from trajloom.encoding.checks import check_tracks, check_visibility
from trajloom.encoding.field import (
    anchor_patch_embedding,
    broadcast_cells,
    decode_offsets,
    encode_offsets,
    patch_embed_cells,
    patch_embed_dense,
    patchify,
    rasterize,
    read_back,
    read_back_patches,
    unpatchify,
)
from trajloom.encoding.grid import (
    DEFAULT_GRID,
    GridSpec,
    axis_anchors,
    cell_anchors,
    denormalize,
    normalize,
    pixel_anchors,
    query_points,
)
from trajloom.encoding.layouts import from_tapvid, nt_to_tn, rescale_tracks, tn_to_nt, to_tapvid
from trajloom.encoding.temporal import (
    DEFAULT_FUTURE,
    DEFAULT_HISTORY,
    DEFAULT_TEMPORAL_FACTOR,
    DEFAULT_WINDOWS,
    WindowSpec,
    latent_frames,
)

__all__ = [
    "DEFAULT_FUTURE",
    "DEFAULT_GRID",
    "DEFAULT_HISTORY",
    "DEFAULT_TEMPORAL_FACTOR",
    "DEFAULT_WINDOWS",
    "GridSpec",
    "WindowSpec",
    "anchor_patch_embedding",
    "axis_anchors",
    "broadcast_cells",
    "cell_anchors",
    "check_tracks",
    "check_visibility",
    "decode_offsets",
    "denormalize",
    "encode_offsets",
    "from_tapvid",
    "latent_frames",
    "location_variance_explained",
    "normalize",
    "nt_to_tn",
    "patch_embed_cells",
    "patch_embed_dense",
    "patchify",
    "pixel_anchors",
    "query_points",
    "rasterize",
    "read_back",
    "read_back_patches",
    "rescale_tracks",
    "tn_to_nt",
    "to_tapvid",
    "unpatchify",
]
__version__ = "0.1.0"
