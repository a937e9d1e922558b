"""TrajLoom data: video io, dataset formats, synthetic scenes, WebDataset streaming.

Submodules are imported on demand (`from trajloom.data import video`); this package
imports none of them eagerly so that `trajloom.data.tracking` and the torch-based
streaming code cost nothing to users of the video and format helpers.
"""

__version__ = "0.1.0"
