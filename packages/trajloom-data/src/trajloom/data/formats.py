"""The dataset formats of DESIGN.md ("Formats"), under the names they had before the split.

Each format has its own module; import from it in new code:

- `trajloom.data.released`: released `<id>.npz` tracks, captions CSV, released folders;
- `trajloom.data.shards`: our WebDataset shards, manifests, released -> shards;
- `trajloom.data.runs`: run folders as the released benchmark scripts read them;
- `trajloom.data.wanmove`: the Wan-Move export;
- `trajloom.data.checks` (FormatError) and `trajloom.data.names` (canonical_id).
"""

from __future__ import annotations

from trajloom.data.checks import FormatError
from trajloom.data.names import canonical_id
from trajloom.data.released import (
    CAPTION_COLUMNS,
    RELEASED_TRACK_KEYS,
    RELEASED_VIS_KEYS,
    ReleasedItem,
    find_released_items,
    load_released_npz,
    read_captions_csv,
    save_released_npz,
    write_captions_csv,
)
from trajloom.data.runs import (
    PREDICTION_CLIP_EPS,
    RunFolder,
    read_run_folder,
    sanitize_predictions,
    write_run_folder,
)
from trajloom.data.shards import (
    MANIFEST_NAME,
    ShardSample,
    convert_released_to_shards,
    decode_shard_sample,
    encode_shard_sample,
    iter_shard_samples,
    read_manifest,
    shard_key,
    write_shards,
)
from trajloom.data.wanmove import read_wanmove, write_wanmove, write_wanmove_pins

__all__ = [
    "CAPTION_COLUMNS",
    "MANIFEST_NAME",
    "PREDICTION_CLIP_EPS",
    "RELEASED_TRACK_KEYS",
    "RELEASED_VIS_KEYS",
    "FormatError",
    "ReleasedItem",
    "RunFolder",
    "ShardSample",
    "canonical_id",
    "convert_released_to_shards",
    "decode_shard_sample",
    "encode_shard_sample",
    "find_released_items",
    "iter_shard_samples",
    "load_released_npz",
    "read_captions_csv",
    "read_manifest",
    "read_run_folder",
    "read_wanmove",
    "sanitize_predictions",
    "save_released_npz",
    "shard_key",
    "write_captions_csv",
    "write_run_folder",
    "write_shards",
    "write_wanmove",
    "write_wanmove_pins",
]
