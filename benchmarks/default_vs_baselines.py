"""A finished ``apps/train`` run against the trivial baselines, with K futures per clip.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/default_vs_baselines.py runs/quick
    .venv/bin/python benchmarks/default_vs_baselines.py runs/quick --samples 8 --clips 64
    .venv/bin/python benchmarks/default_vs_baselines.py runs/quick --steps 50  # sampler steps
    .venv/bin/python benchmarks/default_vs_baselines.py --quick  # no runs/quick: a ci run
    .venv/bin/python benchmarks/default_vs_baselines.py --world rigid   # no model: baselines

Reads the run's recipe (``config.json``) and trained set (``trained/``), draws the
held-out synthetic clips the training evaluation uses (the ``EVAL`` seed stream: no
training or validation scene), and forecasts each with the forecasters of the training
evaluation (``trajloom_train.evaluate``): the trained set (K futures, noise seed
``recipe.seed + g`` for clip g, sample 0 is the evaluation's future), the static and
constant-velocity baselines (deterministic: K equal copies), plus two references that
read the true future: the run's VAE reconstructing it (what the generator can reach at
best) and the truth itself. Scored with ``trajloom.metrics`` as the evaluation does
(ungated by visibility):

* FVMD (windows of ``recipe.eval.fvmd_clip_len`` frames, stride 1) and FVMD-Long (one
  window over the whole future) of sample 0;
* VEPE of sample 0 (mean endpoint error over visible points, px);
* minADE_K / minFDE_K (best of the K futures, px) and the diversity of the K futures.

Prints a table and writes it with every number to ``<run>/eval/vs_baselines.json`` (or
``--json``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from trajloom.data.synthetic import DYNAMICS
from trajloom.flow.forecast import (
    BaselineForecaster,
    Forecaster,
    VAEReconstruction,
    forecast_clip,
)
from trajloom.flow.pipeline import TrajLoomPipeline
from trajloom.metrics import ForecastAccumulator, FVMDAccumulator, FVMDConfig, VEPEAccumulator
from trajloom_train.cli import CONFIG_NAME
from trajloom_train.config import Recipe, recipe_from_dict
from trajloom_train.data import EVAL, SyntheticSplit
from trajloom_train.evaluate import _forecasters
from trajloom_train.recipes import quick

COLUMNS = ("fvmd", "fvmd_long", "min_ade", "min_fde", "vepe", "diversity")


class _Scores:
    """Streaming metrics of one method over the held-out clips."""

    def __init__(self, recipe: Recipe, grid_hw: tuple[int, int]) -> None:
        self.fvmd = FVMDAccumulator(FVMDConfig(clip_len=recipe.eval.fvmd_clip_len), grid_hw)
        self.fvmd_long = FVMDAccumulator(FVMDConfig(clip_len=None), grid_hw)
        # FVMD needs one cube of 5 x 5 grid points (the ci recipe's 4 x 8 grid has none)
        self.has_fvmd = min(grid_hw) >= self.fvmd.config.cell_size
        self.vepe = VEPEAccumulator()
        self.forecast = ForecastAccumulator()

    def update(self, samples: np.ndarray, gt: np.ndarray, vis: np.ndarray) -> None:
        if self.has_fvmd:
            self.fvmd.update(gt, samples[0])
            self.fvmd_long.update(gt, samples[0])
        self.vepe.update(samples[0], gt, vis)
        self.forecast.update(samples, gt, vis)

    def result(self) -> dict[str, Any]:
        k = self.forecast.result()
        return {
            "fvmd": self.fvmd.result().combined if self.has_fvmd else None,
            "fvmd_long": self.fvmd_long.result().combined if self.has_fvmd else None,
            "vepe": self.vepe.compute(),
            "min_ade": k.min_ade,
            "min_fde": k.min_fde,
            "diversity": k.diversity,
            "num_samples": k.num_samples,
            "num_videos": k.num_videos,
        }


def methods(run: Path, recipe: Recipe) -> tuple[dict[str, Forecaster], TrajLoomPipeline]:
    pipe = TrajLoomPipeline.from_pretrained(run / "trained")
    found = _forecasters(pipe, recipe, origin=str(run / "trained"))
    truth = found.pop("ground_truth")
    found["vae_reconstruction"] = VAEReconstruction(
        pipe.vae, pipe.device, history=recipe.data.history, origin="vae"
    )
    found["ground_truth"] = truth
    return found, pipe


def score(run: Path, *, clips: int | None, samples: int, steps: int | None) -> dict[str, Any]:
    recipe = recipe_from_dict(json.loads((run / CONFIG_NAME).read_text()))
    if steps is not None:
        recipe = replace(recipe, eval=replace(recipe.eval, steps=steps))
    forecasters, pipe = methods(run, recipe)
    grid_hw = (pipe.grid.grid_h, pipe.grid.grid_w)
    scores = {name: _Scores(recipe, grid_hw) for name in forecasters}
    split = SyntheticSplit(recipe.data, recipe.seed, EVAL)
    count = clips or recipe.eval.clips
    start = time.perf_counter()
    for g in range(count):
        clip = split.sample(g)
        assert clip.fut_tracks is not None and clip.fut_vis is not None
        for name, forecaster in forecasters.items():
            k = samples if name == "trajloom" else 1
            out = forecast_clip(forecaster, clip, num_samples=k, seed=recipe.seed + g)
            futures = np.repeat(out.tracks, samples, 0) if k == 1 else out.tracks
            scores[name].update(futures, clip.fut_tracks, clip.fut_vis)
    return {
        "run": str(run),
        "recipe": recipe.name,
        "dynamics": recipe.data.dynamics,
        "clips": count,
        "samples": samples,
        "solver": recipe.eval.solver,
        "steps": recipe.eval.steps,
        "fvmd_clip_len": recipe.eval.fvmd_clip_len,
        "seconds": round(time.perf_counter() - start, 1),
        "results": {name: s.result() for name, s in scores.items()},
    }


def world(dynamics: str, *, clips: int | None) -> dict[str, Any]:
    """No model: what the baselines, and the truth spoiled in two ways, score on the quick
    recipe's held-out clips of the world ``dynamics`` (why a model can or cannot win)."""
    recipe = quick()
    recipe = replace(recipe, data=replace(recipe.data, dynamics=dynamics))
    grid, th, tf = recipe.data.grid, recipe.data.history, recipe.data.future
    baselines = {
        "static": BaselineForecaster("static", grid, th, tf),
        "constant_velocity": BaselineForecaster("constvel", grid, th, tf),
    }
    names = [*baselines, "truth + 0.5 px white noise", "truth + 1 px offset per point"]
    scores = {name: _Scores(recipe, (grid.grid_h, grid.grid_w)) for name in names}
    split = SyntheticSplit(recipe.data, recipe.seed, EVAL)
    count = clips or recipe.eval.clips
    rng = np.random.default_rng(0)
    for g in range(count):
        clip = split.sample(g)
        gt, vis = clip.fut_tracks, clip.fut_vis
        assert gt is not None and vis is not None
        for name, forecaster in baselines.items():
            scores[name].update(
                forecast_clip(forecaster, clip, num_samples=2, seed=0).tracks, gt, vis
            )
        noise = rng.normal(0.0, 0.5, (2, *gt.shape))
        offset = rng.normal(0.0, 1.0, (2, 1, *gt.shape[1:]))
        scores[names[2]].update(gt + noise, gt, vis)
        scores[names[3]].update(gt + offset, gt, vis)
    return {
        "recipe": recipe.name,
        "dynamics": dynamics,
        "clips": count,
        "samples": 2,
        "results": {name: s.result() for name, s in scores.items()},
    }


def table(summary: dict[str, Any]) -> str:
    k = summary["samples"]
    head = ["method", "FVMD", "FVMD-Long", f"minADE_{k}", f"minFDE_{k}", "VEPE", "diversity"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in summary["results"].items():
        cells = ["-" if r[c] is None else f"{r[c]:.2f}" for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ci_run(folder: Path) -> Path:
    """Train the ``ci`` recipe end to end into ``folder/ci`` (about a minute of CPU)."""
    main_py = Path(__file__).resolve().parents[1] / "apps" / "train" / "__main__.py"
    command = [sys.executable, str(main_py), "all", "--recipe", "ci", "--no-progress"]
    subprocess.run([*command, "--runs-dir", str(folder), "--name", "ci"], check=True)
    return folder / "ci"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "run", type=Path, nargs="?", default=Path("runs/quick"), help="a finished run folder"
    )
    parser.add_argument("--samples", type=int, default=4, help="K futures per clip (>= 2)")
    parser.add_argument("--clips", type=int, default=None, help="default: recipe.eval.clips")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (recipe's)")
    parser.add_argument("--json", type=Path, default=None, help="default: <run>/eval/")
    parser.add_argument(
        "--world",
        choices=sorted(DYNAMICS),
        default=None,
        help="no model: the baselines on the quick recipe's held-out clips of this world",
    )
    parser.add_argument(
        "--quick", action="store_true", help="without the run folder: train the ci recipe first"
    )
    args = parser.parse_args()
    if args.world:
        summary = world(args.world, clips=args.clips)
        print(f"{summary['clips']} held-out clips of the quick recipe, {args.world} world\n")
        print(table(summary))
        return
    if args.samples < 2:
        parser.error(f"--samples must be >= 2 (best-of-K and diversity), got {args.samples}")
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if not (run / "trained").is_dir():
            if not args.quick:
                parser.error(f"{run} has no trained/ folder: run `uv run apps/train` to the end")
            run = ci_run(Path(tmp))
        summary = score(run, clips=args.clips, samples=args.samples, steps=args.steps)
        out = args.json or run / "eval" / "vs_baselines.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"{summary['clips']} held-out clips ({summary['dynamics']} world), K = "
        f"{summary['samples']}, {summary['solver']} {summary['steps']} steps, "
        f"{summary['seconds']} s\n"
    )
    print(table(summary))
    print(f"\nwrote {out}" + (" (a temporary ci run, now removed)" if run != args.run else ""))


if __name__ == "__main__":
    main()
