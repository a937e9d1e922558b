"""`trajloom.metrics.report`: scoring a method's runs, the tables and the result files.

The expected texts were written by the code this module replaced (apps/bench's
`format_markdown` / `write_results`, apps/train's `format_table`), so the layouts stay.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from trajloom.metrics import (
    FVMDConfig,
    forecast_metrics,
    format_method_table,
    format_paper_table,
    json_ready,
    score_method,
    score_runs,
    write_results,
)
from trajloom.metrics.report import fvmd_key

SOURCES = ["kubric", "robotap"]


def _results() -> dict:
    """Two methods on two sources: numpy scalars, NaN, missing metrics and sources."""
    per_video = [
        {
            "video": "a",
            "flow_tv": 0.0,
            "div_curl_energy": float("nan"),
            "vepe": np.float32(4.5),
            "fvmd_windows": 9,
        }
    ]
    return {
        "static": {
            "kubric": {
                "fvmd": 1234.5678,
                "fvmd_long": None,
                "flow_tv": 0.0,
                "div_curl_energy": 0.0,
                "vepe": 4.9321,
                "fvmd_velocity": np.float64(600.1),
                "fvmd_acceleration": 634.4678,
                "num_videos": 3,
                "num_windows": np.int64(27),
                "notes": [],
                "per_video": per_video,
            },
            "robotap": {
                "fvmd": float("nan"),
                "flow_tv": 0.0123,
                "div_curl_energy": 1.29e-05,
                "vepe": 0.005,
                "num_videos": 1,
                "num_windows": 0,
            },
        },
        "cv": {
            "kubric": {
                "fvmd": 99.0,
                "fvmd_long": 101.25,
                "flow_tv": 0.03,
                "div_curl_energy": 2.44e-04,
                "vepe": 0.76,
                "num_videos": 3,
                "num_windows": 27,
                "per_video": [
                    {"video": "b", "flow_tv": 0.25, "div_curl_energy": 1e-6, "vepe": 0.5}
                ],
            }
        },
    }


PAPER_TABLE = """\
| Metric | Method | kubric | robotap |
|---|---|---|---|
| FVMD | static | 1234.57 | - |
|  | cv | 99.00 | - |
| FVMD-Long | static | - | - |
|  | cv | 101.25 | - |
| FlowTV | static | 0.00e+00 | 0.01 |
|  | cv | 0.03 | - |
| DivCurlE | static | 0.00e+00 | 1.29e-05 |
|  | cv | 2.44e-04 | - |
| VEPE (px) | static | 4.93 | 5.00e-03 |
|  | cv | 0.76 | - |"""

TABLE_CSV = """\
method,source,fvmd,fvmd_long,flow_tv,div_curl_energy,vepe,min_ade,min_fde,energy_score,diversity,fvmd_velocity,fvmd_acceleration,num_videos,num_windows,num_samples
static,kubric,1234.5678,,0.0,0.0,4.9321,,,,,600.1,634.4678,3,27,
static,robotap,,,0.0123,1.29e-05,0.005,,,,,,,1,0,
cv,kubric,99.0,101.25,0.03,0.000244,0.76,,,,,,,3,27,
cv,robotap,,,,,,,,,,,,,,
"""

PER_VIDEO_CSV = """\
method,source,video,flow_tv,div_curl_energy,vepe,fvmd_windows
static,kubric,a,0.0,,4.5,9
cv,kubric,b,0.25,1e-06,0.5,
"""


def test_paper_table_layout() -> None:
    assert format_paper_table(_results(), SOURCES) == PAPER_TABLE
    # A metric no method has anywhere is left out.
    table = format_paper_table({"m": {"s": {"vepe": 1.0}}}, ["s"])
    assert table.splitlines()[2:] == ["| VEPE (px) | m | 1.00 |"]


def test_method_table_layout() -> None:
    results = {
        "trajloom": {"vepe": 3.14159, "fvmd": 1234.5678, "flow_tv": 0.000123456, "notes": []},
        "ground_truth": {"vepe": 0.0, "fvmd": 0.0, "flow_tv": 0.01, "div_curl_energy": 2e-7},
    }
    assert format_method_table(results) == (
        "| method | VEPE (px) | FVMD | FlowTV | DivCurlE |\n"
        "|---|---|---|---|---|\n"
        "| trajloom | 3.142 | 1235 | 0.0001235 | - |\n"
        "| ground_truth | 0 | 0 | 0.01 | 2e-07 |"
    )


def test_method_table_marks_the_strongest_baseline_per_column() -> None:
    results = {
        "model": {"vepe": 1.0, "min_ade": 9.0, "diversity": 4.0},
        "static": {"vepe": 3.0, "min_ade": 2.0, "diversity": 0.0},
        "constvel": {"vepe": 2.0, "min_ade": 5.0, "diversity": 0.0},
    }
    columns = [("vepe", "VEPE"), ("min_ade", "minADE"), ("diversity", "div")]
    rows = format_method_table(results, columns, baselines=["static", "constvel"]).splitlines()
    assert rows[2:] == [
        "| model | 1 | 9 | 4 |",  # the model is never marked, even where it is lowest
        "| static | 3 | **2** | 0 |",
        "| constvel | **2** | 5 | 0 |",  # diversity describes the samples: not marked
    ]


def test_json_ready() -> None:
    value = {"a": (np.float32(0.5), float("inf")), "b": [np.float64("nan"), np.int64(3)]}
    assert json_ready(value) == {"a": [0.5, None], "b": [None, 3]}
    assert json.dumps(json_ready(value), allow_nan=False)


def test_write_results_files(tmp_path) -> None:
    settings = {"seed": 0, "x": float("inf")}
    paths = write_results(tmp_path / "out", _results(), SOURCES, settings, ["cv/robotap: no"])
    assert {k: p.name for k, p in paths.items()} == {
        "json": "results.json",
        "csv": "table.csv",
        "markdown": "table.md",
        "per_video": "per_video.csv",
    }
    assert paths["markdown"].read_text() == PAPER_TABLE + "\n"
    assert paths["csv"].read_text().replace("\r\n", "\n") == TABLE_CSV
    assert paths["per_video"].read_text().replace("\r\n", "\n") == PER_VIDEO_CSV
    document = json.loads(paths["json"].read_text())
    assert document["settings"] == {"seed": 0, "x": None}
    assert document["sources"] == SOURCES and document["failures"] == ["cv/robotap: no"]
    assert document["results"]["static"]["kubric"]["per_video"][0]["div_curl_energy"] is None
    assert document["results"]["static"]["kubric"]["num_windows"] == 27


def _write_runs(root, grid_points, rng, videos=3, frames=12):
    q = grid_points(6, 6).astype(np.float32)
    for i in range(videos):
        d = root / f"video_{i}"
        d.mkdir(parents=True)
        gt = q[None] + np.cumsum(rng.normal(size=(frames, 36, 2)) * 3, axis=0)
        np.save(d / "query_xy.npy", q)
        np.save(d / "gt_tracks.npy", gt.astype(np.float32))
        np.save(d / "pred_tracks.npy", (gt + rng.normal(size=gt.shape)).astype(np.float32))
        np.save(d / "gt_visibility.npy", (rng.random((frames, 36)) > 0.2).astype(np.uint8))


def test_score_method_is_score_runs_gated_plus_the_long_clip(tmp_path, grid_points, rng) -> None:
    _write_runs(tmp_path, grid_points, rng)
    cfg = FVMDConfig(clip_len=6, clip_stride=2)
    result = score_method(tmp_path, fvmd_config=cfg, grid_stride=32.0)
    gated = {"use_gt_visibility": True, "use_visibility": True, "grid_stride": 32.0}
    main = score_runs(tmp_path, fvmd_config=cfg, **gated)
    long = score_runs(tmp_path, fvmd_config=FVMDConfig(clip_len=None), **gated)
    for key in ("fvmd", "fvmd_velocity", "flow_tv", "div_curl_energy", "vepe", "num_windows"):
        assert result[key] == main[key], key
    assert result["fvmd_long"] == long["fvmd"] and result["fvmd_long"] != result["fvmd"]
    assert result["num_videos"] == 3 and len(result["per_video"]) == 3

    plain = score_method(
        tmp_path, fvmd_config=cfg, grid_stride=32.0, use_visibility=False, fvmd_long=False
    )
    ungated = score_runs(tmp_path, fvmd_config=cfg, grid_stride=32.0)
    assert plain["fvmd_long"] is None
    assert plain["fvmd"] == ungated["fvmd"] and plain["flow_tv"] == ungated["flow_tv"]
    assert plain["flow_tv"] != result["flow_tv"]


def test_score_method_notes_and_errors(tmp_path, grid_points, rng) -> None:
    _write_runs(tmp_path, grid_points, rng)
    for gt in tmp_path.glob("*/gt_tracks.npy"):
        gt.unlink()
    result = score_method(tmp_path, fvmd_config=FVMDConfig(clip_len=6), grid_stride=32.0)
    assert result["fvmd"] is None and result["fvmd_long"] is None and result["vepe"] is None
    assert result["notes"] == ["fvmd, vepe: no run folder has gt_tracks.npy"]  # said once
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no run folder"):
        score_method(tmp_path / "empty", fvmd_config=FVMDConfig(), grid_stride=32.0)


def test_score_method_with_samples_and_more_clip_lengths(tmp_path, grid_points, rng) -> None:
    roots = [tmp_path / f"sample_{k:03d}" for k in range(3)]
    for root in roots:
        _write_runs(root, grid_points, np.random.default_rng(7))  # same truth in every sample
    for k, root in enumerate(roots[1:], 1):  # samples 1, 2: other predictions
        for pred in root.glob("*/pred_tracks.npy"):
            np.save(pred, np.load(pred) + 2.0 * k)
    cfg = FVMDConfig(clip_len=6, clip_stride=2)
    result = score_method(
        roots[0], fvmd_config=cfg, grid_stride=32.0, samples=roots, more_clip_lens=(8,)
    )
    multi = forecast_metrics(roots)
    assert result["num_samples"] == 3 and result["min_ade"] == multi["min_ade"]
    assert result["min_fde"] == multi["min_fde"] and result["diversity"] > 0
    gated = {"use_gt_visibility": True, "use_visibility": True, "grid_stride": 32.0}
    clip8 = score_runs(roots[0], fvmd_config=FVMDConfig(clip_len=8, clip_stride=2), **gated)
    assert result[fvmd_key(8)] == clip8["fvmd"] and result[fvmd_key(8)] != result["fvmd"]
    one = score_method(roots[0], fvmd_config=cfg, grid_stride=32.0, samples=roots[:1])
    assert one["num_samples"] == 1 and one["diversity"] is None
    assert result["min_ade"] <= one["min_ade"] + 1e-12  # best of 3: never worse than one
    assert score_method(roots[0], fvmd_config=cfg, grid_stride=32.0)["min_ade"] is None
