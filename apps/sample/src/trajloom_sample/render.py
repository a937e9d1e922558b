"""The sample app's renders: the overlays and grids of :mod:`trajloom.data.render`."""

from trajloom.data.render import (
    RenderConfig,
    grid_colors,
    render_grid,
    render_overlay,
    tile_videos,
)

__all__ = ["RenderConfig", "grid_colors", "render_grid", "render_overlay", "tile_videos"]
