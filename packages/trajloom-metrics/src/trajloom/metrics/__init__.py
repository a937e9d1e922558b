"""Motion metrics of TrajLoom with numpy and scipy only.

Numbers equal those printed by the released benchmark scripts of zewei-Zhang/TrajLoom
(FVMD histograms and features also equal those of the PyPI `fvmd` package).

    from trajloom.metrics import fvmd, flow_tv, div_curl_energy, vepe, FVMDConfig

Multi-sample forecasts: :func:`best_of_k` (minADE_K / minFDE_K), :func:`sample_diversity`,
:func:`energy_score` (a proper score of the K futures), :func:`forecast_summary`,
:func:`paired_bootstrap` (is a difference between two methods more than noise?) (all of one video's, JSON-ready)
and the streaming :class:`ForecastAccumulator` (:mod:`trajloom.metrics.forecast`).

Run folders (the released layout) are scored with :func:`score_runs` (K sample folders
with :func:`score_samples`); evaluations of
several methods score each with :func:`score_method` and report with
:mod:`trajloom.metrics.report` (paper-style tables, CSV, strict JSON).
"""

from trajloom.metrics.flowfield import (
    div_curl_energy,
    div_curl_energy_per_frame,
    flow_div_curl,
    flow_tv,
    flow_tv_and_div_curl_energy,
    flow_tv_per_frame,
    video_mean,
)
from trajloom.metrics.forecast import (
    ForecastAccumulator,
    ForecastResult,
    best_of_k,
    energy_score,
    forecast_summary,
    mean_ade,
    sample_diversity,
    sample_errors,
)
from trajloom.metrics.frechet import (
    GaussianAccumulator,
    GaussianStats,
    frechet_distance,
    gaussian_stats,
)
from trajloom.metrics.fvmd import (
    FVMDAccumulator,
    FVMDConfig,
    FVMDResult,
    clip_windows,
    fvmd,
    fvmd_features,
    fvmd_from_features,
    motion_histograms,
    velocity_acceleration,
)
from trajloom.metrics.grid import factor_grid, infer_grid
from trajloom.metrics.report import (
    RESULT_FILES,
    format_method_table,
    format_paper_table,
    json_ready,
    result_texts,
    score_method,
    write_results,
)
from trajloom.metrics.runs import (
    RunFolderError,
    RunVideo,
    discover_run_dirs,
    forecast_metrics,
    load_run,
    score_runs,
    score_samples,
)
from trajloom.metrics.stats import paired_bootstrap
from trajloom.metrics.vepe import VEPEAccumulator, endpoint_error, vepe, vepe_sum_count

__all__ = [
    "RESULT_FILES",
    "FVMDAccumulator",
    "FVMDConfig",
    "FVMDResult",
    "ForecastAccumulator",
    "ForecastResult",
    "GaussianAccumulator",
    "GaussianStats",
    "RunFolderError",
    "RunVideo",
    "VEPEAccumulator",
    "best_of_k",
    "clip_windows",
    "discover_run_dirs",
    "div_curl_energy",
    "div_curl_energy_per_frame",
    "endpoint_error",
    "energy_score",
    "factor_grid",
    "flow_div_curl",
    "flow_tv",
    "flow_tv_and_div_curl_energy",
    "flow_tv_per_frame",
    "forecast_metrics",
    "forecast_summary",
    "format_method_table",
    "format_paper_table",
    "frechet_distance",
    "fvmd",
    "fvmd_features",
    "fvmd_from_features",
    "gaussian_stats",
    "infer_grid",
    "json_ready",
    "load_run",
    "mean_ade",
    "motion_histograms",
    "paired_bootstrap",
    "result_texts",
    "sample_diversity",
    "sample_errors",
    "score_method",
    "score_runs",
    "score_samples",
    "velocity_acceleration",
    "vepe",
    "vepe_sum_count",
    "video_mean",
    "write_results",
]
