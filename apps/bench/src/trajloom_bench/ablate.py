"""The paper's ablation study (Tables 3, 4 and 5) at any scale of an ``apps/train`` recipe.

Each variant trains the same recipe with one switch (``trajloom-train config`` prints
every key), evaluated on a TrajLoomBench built at the recipe's geometry (held-out
synthetic scenes, and real video windows tracked by ``bench build``):

* ``full`` (Tables 3, 4, 5): Ours; every stage.
* ``no_offset`` (3, 4): w/o offset, ``vae_model.use_offsets=false``; every stage.
* ``no_regularizer`` (4): w/o regularizer, ``vae_loss.use_regularizer=false``; the VAE.
* ``no_fusion`` (5): w/o fusion, ``generator.use_history_fusion=false``; flow and
  on-policy stages, from copies of full's VAE, statistics, latent cache, visibility head.
* ``no_anchoring`` (5): w/o anchoring, ``flow_loss.anchor=false`` (training and
  sampling); as ``no_fusion``.
* ``early`` (5): full's flow checkpoint at ``early_fraction`` of the flow steps (the
  paper's 20k of 100k), flow matching only; nothing trained.
* ``no_onpolicy`` (5): w/o on-policy, ``onpolicy_loss.enabled=false``: the on-policy
  stage's steps with flow matching only (the same budget); from full's flow stage.

The visibility head is trained on VAE latents alone, so variants that share the VAE share
it too. Training runs in ``trajloom-train`` subprocesses (apps do not import each other);
evaluation is ``apps/bench eval``'s (:func:`trajloom_bench.evaluate.evaluate_method`):
generator variants forecast one future per clip (the recipe's solver and steps, noise seed
``seed + clip``), scored with FVMD-Long, FlowTV and DivCurlE gated by the ground-truth
visibility; VAE variants reconstruct the true future (VEPE, pixels).

Output folder::

    OUT/study.json               settings; a resumed study must be started with the same
    OUT/bench/                   the bench (unless --bench names one)
    OUT/runs/<variant>/          apps/train run folders (train.log: the training output;
                                 SHARED.json: stages copied from full)
    OUT/eval/runs/<method>/<source>/<video>/   evaluated run folders
    OUT/results/<variant>.json   status, scores by source, failures, wall seconds
    OUT/tables.md, OUT/tables.json

Resuming: a variant whose results file says ``done`` is skipped; the others run again
(training resumes from its last checkpoint, done stages are skipped).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from trajloom.data.formats import FormatError
from trajloom.data.outputs import OutputError, OutputLock, atomic_write_text
from trajloom.data.tracking import make_tracker
from trajloom.encoding import GridSpec
from trajloom.flow.forecast import (
    BaselineForecaster,
    Forecaster,
    ForecastError,
    MethodSpec,
    RunFolders,
    TrueFuture,
    load_method,
    resolve_device,
)
from trajloom.flow.pipeline import TrajLoomPipeline
from trajloom.metrics import json_ready
from trajloom_bench.build import (
    BenchConfig,
    build_synthetic_source,
    build_video_source,
    read_bench,
    write_bench_index,
)
from trajloom_bench.evaluate import EvalConfig, bench_sources, evaluate_method

__all__ = [
    "TABLES",
    "VARIANTS",
    "BenchSpec",
    "Study",
    "StudyError",
    "Variant",
    "format_tables",
    "run_study",
    "variant_overrides",
]

Progress = Callable[[str], None]


class StudyError(Exception):
    """The study cannot start: bad options, a recipe that does not resolve, no bench."""


@dataclass(frozen=True)
class Variant:
    """One row of the ablation tables and how it is trained."""

    name: str
    label: str  # the row's setting, as in the paper
    sets: tuple[str, ...] = ()  # apps/train overrides: the switch
    command: str | None = "all"  # trajloom-train command; None: assembled from `base`
    base: str | None = None  # the variant whose stages it starts from
    shared: tuple[str, ...] = ()  # stages copied from `base`
    generator: bool = True  # its trained set forecasts (Tables 3, 5)
    vae: bool = False  # its VAE reconstructs (Table 4)


_SHARE_VAE = ("vae", "stats", "cache", "vis")
VARIANTS: tuple[Variant, ...] = (
    Variant("full", "Ours", vae=True),
    Variant("no_offset", "w/o offset", ("vae_model.use_offsets=false",), vae=True),
    Variant(
        "no_regularizer",
        "w/o regularizer",
        ("vae_loss.use_regularizer=false",),
        command="vae",
        generator=False,
        vae=True,
    ),
    Variant(
        "no_fusion",
        "w/o fusion",
        ("generator.use_history_fusion=false",),
        base="full",
        shared=_SHARE_VAE,
    ),
    Variant(
        "no_anchoring", "w/o anchoring", ("flow_loss.anchor=false",), base="full", shared=_SHARE_VAE
    ),
    Variant("early", "early flow checkpoint", command=None, base="full"),
    Variant(
        "no_onpolicy",
        "w/o on-policy",
        ("onpolicy_loss.enabled=false",),
        base="full",
        shared=(*_SHARE_VAE, "flow"),
    ),
)
_BY_NAME = {v.name: v for v in VARIANTS}

#: The paper's tables: number -> (title, result kind, metric keys, variants in row order).
TABLES: dict[int, tuple[str, str, tuple[str, ...], tuple[str, ...]]] = {
    3: (
        "Grid-anchor offset encoding, future generation",
        "generator",
        ("fvmd_long", "flow_tv", "div_curl_energy"),
        ("no_offset", "full"),
    ),
    4: (
        "TrajLoom-VAE reconstruction of the future window, VEPE (px)",
        "vae",
        ("vepe",),
        ("no_offset", "no_regularizer", "full"),
    ),
    5: (
        "TrajLoom-Flow components, future generation",
        "generator",
        ("fvmd_long", "flow_tv", "div_curl_energy"),
        ("no_fusion", "no_anchoring", "early", "no_onpolicy", "full"),
    ),
}
_KEPT_METRICS = ("fvmd", "fvmd_long", "flow_tv", "div_curl_energy", "vepe", "num_videos")
_REFERENCE = "reference"


@dataclass(frozen=True)
class BenchSpec:
    """The bench the variants are scored on: an existing folder, or what to build."""

    folder: Path | None = None  # an existing bench (`bench build`); None: build OUT/bench
    synthetic: int = 32  # held-out synthetic scenes
    videos: tuple[tuple[str, str], ...] = ()  # (source name, folder of videos)
    windows_per_video: int = 4
    window_stride: int | None = None
    seed: int = 1  # synthetic scene stream; must differ from the recipe's (its training scenes)
    limit: int | None = None  # clips per source


@dataclass(frozen=True)
class Study:
    """What the study trains: the recipe, its scale, extra overrides, the variants."""

    out: Path
    recipe: str = "quick"
    steps_scale: float | None = None
    sets: tuple[str, ...] = ()  # overrides of every variant
    variants: tuple[str, ...] = tuple(v.name for v in VARIANTS)
    early_fraction: float = 0.2  # the paper's 20k of 100k flow steps
    device: str = "auto"
    jobs: int = 1  # variants trained at once (independent ones: full, no_offset, ...)
    train_command: tuple[str, ...] = ()  # default: the trajloom-train next to this Python
    bench: BenchSpec = field(default_factory=BenchSpec)

    def __post_init__(self) -> None:
        unknown = [n for n in self.variants if n not in _BY_NAME]
        if unknown:
            raise StudyError(f"unknown variants {unknown}; choose from {list(_BY_NAME)}")
        if self.jobs < 1:
            raise StudyError(f"--jobs must be >= 1, got {self.jobs}")
        if self.steps_scale is not None and not (
            math.isfinite(self.steps_scale) and self.steps_scale > 0
        ):
            raise StudyError(f"--steps-scale must be a finite number > 0, got {self.steps_scale}")
        if not 0 < self.early_fraction < 1:
            raise StudyError(f"--early-fraction must be in (0, 1), got {self.early_fraction}")

    def selected(self) -> list[Variant]:
        """The chosen variants and the ones they start from, in :data:`VARIANTS` order."""
        names = set(self.variants) | {_BY_NAME[n].base for n in self.variants} - {None}
        return [v for v in VARIANTS if v.name in names]

    def settings(self) -> dict[str, Any]:
        """What must not change when the study resumes."""
        return {
            "recipe": self.recipe,
            "steps_scale": self.steps_scale,
            "sets": list(self.sets),
            "early_fraction": self.early_fraction,
            "bench": json.loads(json.dumps(asdict(self.bench), default=str)),
        }


# ----------------------------------------------------------------------------- training


def _train_command(study: Study) -> list[str]:
    if study.train_command:
        return list(study.train_command)
    script = Path(sys.executable).parent / "trajloom-train"
    found = str(script) if script.is_file() else shutil.which("trajloom-train")
    if found is None:
        raise StudyError(
            "trajloom-train not found next to this Python or on PATH; install apps/train "
            "(uv sync) or give --train-command"
        )
    return [found]


def _train_args(study: Study, extra: tuple[str, ...] = ()) -> list[str]:
    args = ["--recipe", study.recipe]
    if study.steps_scale is not None:
        args += ["--steps-scale", str(study.steps_scale)]
    for item in (*study.sets, *extra):
        args += ["--set", item]
    return args


def resolve_recipe(study: Study) -> dict[str, Any]:
    """The study's resolved recipe (``trajloom-train config``); bad settings raise."""
    cmd = [*_train_command(study), "config", *_train_args(study)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise StudyError(
            f"the recipe does not resolve ({shlex.join(cmd)}): {proc.stderr.strip()[-800:]}"
        )
    return json.loads(proc.stdout)


def early_step(recipe: dict[str, Any], fraction: float) -> int:
    """The flow step of the early checkpoint: ``fraction`` of the flow steps, at least 1."""
    return max(1, round(recipe["flow"]["steps"] * fraction))


def variant_overrides(variant: Variant, recipe: dict[str, Any], fraction: float) -> tuple[str, ...]:
    """The overrides of ``variant``: its switch; the full run also keeps every flow
    checkpoint at the early step's cadence (logging keys: no number it trains changes)."""
    if variant.name != "full":
        return variant.sets
    every = early_step(recipe, fraction)
    keep = recipe["flow"]["steps"] // every + 1
    return (*variant.sets, f"flow.save_every={every}", f"flow.keep_last={keep}")


def _copy_shared(variant: Variant, runs: Path) -> None:
    """Copy the finished stages ``variant`` shares from its base (once, before training)."""
    run_dir = runs / variant.name
    base = runs / str(variant.base)
    missing = [s for s in variant.shared if not (base / s / "DONE.json").is_file()]
    if missing:
        raise RuntimeError(f"needs the finished stages {missing} of {base} ({variant.base} failed)")
    for stage in variant.shared:
        if not (run_dir / stage / "DONE.json").is_file():
            if (run_dir / stage).exists():
                shutil.rmtree(run_dir / stage)
            ignore = shutil.ignore_patterns("checkpoints", "previews")
            shutil.copytree(base / stage, run_dir / stage, ignore=ignore)
    note = {"copied_from": str(base), "stages": list(variant.shared)}
    atomic_write_text(run_dir / "SHARED.json", json.dumps(note, indent=2) + "\n")


def _log_tail(path: Path, lines: int = 6) -> str:
    text = path.read_text(errors="replace").strip().splitlines() if path.is_file() else []
    return " | ".join(text[-lines:])


def train_variant(variant: Variant, study: Study, recipe: dict[str, Any]) -> None:
    """Train ``variant`` in its run folder (resuming it); raises RuntimeError on failure."""
    runs = study.out / "runs"
    run_dir = runs / variant.name
    run_dir.mkdir(parents=True, exist_ok=True)
    if variant.shared:
        _copy_shared(variant, runs)
    if variant.command is None:
        _assemble_early(variant, study, recipe)
        return
    extra = variant_overrides(variant, recipe, study.early_fraction)
    cmd = [*_train_command(study), variant.command, "--name", variant.name]
    cmd += ["--runs-dir", str(runs), "--device", study.device, "--no-progress"]
    cmd += _train_args(study, extra)
    log = run_dir / "train.log"
    with log.open("a") as f:
        f.write(f"$ {shlex.join(cmd)}\n")
        f.flush()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the log follows the training live
        if study.jobs > 1:  # variants share the cores: one training process each
            env.setdefault("TRAJLOOM_TRAIN_PROCS", "1")
        code = subprocess.run(
            cmd, stdout=f, stderr=subprocess.STDOUT, env=env, check=False
        ).returncode
    if code != 0:
        raise RuntimeError(f"trajloom-train exited {code} ({log}): {_log_tail(log)}")


def _load_flow_weights(
    pipe: TrajLoomPipeline, weights: dict[str, torch.Tensor], ckpt: Path
) -> None:
    """Load a flow-stage checkpoint into ``pipe`` in place, strictly.

    The flow stage saves what it trains: ``generator.*`` and, with the built-in context,
    ``video_encoder.*`` / ``text_encoder.*`` (trained jointly); runs from before the
    context saved the generator's keys bare.
    """
    parts = {
        name
        for name in ("generator", "video_encoder", "text_encoder")
        if any(k.startswith(f"{name}.") for k in weights)
    }
    if not parts:
        pipe.generator.load_state_dict(weights, strict=True)
        return
    modules = {name: getattr(pipe, name) for name in parts}
    missing = [name for name, module in modules.items() if module is None]
    if missing:
        raise RuntimeError(f"{ckpt} holds {missing} weights but the base's trained set has none")
    torch.nn.ModuleDict(modules).load_state_dict(weights, strict=True)


def _assemble_early(variant: Variant, study: Study, recipe: dict[str, Any]) -> None:
    """The early variant's trained set: the base's, with the generator of its flow
    checkpoint at the early step (EMA weights where the stage keeps them)."""
    step = early_step(recipe, study.early_fraction)
    base = study.out / "runs" / str(variant.base)
    ckpt = base / "flow" / "checkpoints" / f"step-{step:08d}"
    if not (ckpt / "model.safetensors").is_file():
        raise RuntimeError(
            f"{ckpt} does not exist: the base run kept no flow checkpoint at step {step} "
            "(it was trained outside this study, or the checkpoint was removed)"
        )
    pipe = TrajLoomPipeline.from_pretrained(base / "trained")
    weights = load_file(str(ckpt / "model.safetensors"))
    if (ckpt / "ema.safetensors").is_file():
        weights.update(load_file(str(ckpt / "ema.safetensors")))
    _load_flow_weights(pipe, weights, ckpt)
    pipe.save_pretrained(study.out / "runs" / variant.name / "trained")
    note = {"base": str(base / "trained"), "generator_checkpoint": str(ckpt), "flow_step": step}
    atomic_write_text(
        study.out / "runs" / variant.name / "SHARED.json", json.dumps(note, indent=2) + "\n"
    )


# ----------------------------------------------------------------------------- bench


def _bench_config(recipe: dict[str, Any], spec: BenchSpec) -> BenchConfig:
    data = recipe["data"]
    return BenchConfig(
        width=data["width"],
        height=data["height"],
        stride=data["stride"],
        history=data["history"],
        future=data["future"],
        windows_per_video=spec.windows_per_video,
        window_stride=spec.window_stride,
        store_video=_reads_video(recipe),
        seed=spec.seed,
        dynamics=data["dynamics"],
        min_objects=data["min_objects"],
        max_objects=data["max_objects"],
    )


def _reads_video(recipe: dict[str, Any]) -> bool:
    """Whether the recipe's trained sets read the history video (their context)."""
    return recipe["conditioning"]["video"] != "none"


def prepare_bench(study: Study, recipe: dict[str, Any], progress: Progress) -> Path:
    """The bench folder: ``--bench`` as given, else ``OUT/bench`` (built once, then reused)."""
    spec = study.bench
    if spec.folder is not None:
        config = read_bench(spec.folder).get("config", {})
        if _reads_video(recipe) and not config.get("store_video", True):
            raise StudyError(
                f"--bench {spec.folder} holds no video frames, but the recipe's trained sets "
                "read the history video (conditioning.video="
                f"{recipe['conditioning']['video']}); build the bench with its video (`bench "
                "build` keeps it by default) or leave --bench out"
            )
        return spec.folder
    if spec.seed == recipe["seed"] and spec.synthetic:
        raise StudyError(
            f"--bench-seed {spec.seed} is the recipe's seed: its synthetic scenes are the "
            "training scenes; choose another seed"
        )
    cfg = _bench_config(recipe, spec)
    folder = study.out / "bench"
    names = (["synthetic"] if spec.synthetic else []) + [n for n, _ in spec.videos]
    if not names:
        raise StudyError("nothing to evaluate on: give --synthetic N > 0 or --source NAME=FOLDER")
    if (folder / "bench.json").is_file():
        index = read_bench(folder)
        if index.get("config") == cfg.to_dict() and list(index["sources"]) == names:
            progress(f"bench: reusing {folder}")
            return folder
    if folder.exists():
        shutil.rmtree(folder)
    manifests: dict[str, dict[str, Any]] = {}
    try:
        if spec.synthetic:
            manifests["synthetic"] = build_synthetic_source(
                "synthetic", spec.synthetic, folder / "synthetic", cfg
            )
        tracker = make_tracker(cfg.tracker) if spec.videos else None
        for name, videos in spec.videos:
            manifests[name] = build_video_source(name, Path(videos), folder / name, cfg, tracker)
    except (ValueError, FormatError) as err:
        raise StudyError(f"cannot build the bench: {err}") from None
    write_bench_index(folder, cfg, manifests)
    for name, manifest in manifests.items():
        progress(f"bench: {name}: {manifest['num_samples']} clips")
    return folder


# ----------------------------------------------------------------------------- evaluation


@dataclass
class EvalContext:
    """The bench, its window and the evaluation settings every variant shares."""

    bench: Path
    names: list[str]
    sources: dict[str, Any]
    window: dict[str, Any]
    cfg: EvalConfig
    device: torch.device
    solver: str
    steps: int
    out: Path

    @classmethod
    def create(cls, study: Study, recipe: dict[str, Any], bench: Path) -> EvalContext:
        names, sources = bench_sources(bench, None)
        bench_cfg = read_bench(bench).get("config", {})
        data = recipe["data"]
        grid = GridSpec(data["width"], data["height"], data["stride"])
        history = int(bench_cfg.get("history", data["history"]))
        ev = recipe["eval"]
        cfg = EvalConfig(
            clip_len=ev["fvmd_clip_len"],
            clip_stride=ev["fvmd_clip_stride"],
            seed=recipe["seed"],
            limit=study.bench.limit,
        )
        window = {"grid": grid, "history": history, "future": data["future"]}
        try:
            device = resolve_device(study.device)
        except ForecastError as err:
            raise StudyError(str(err)) from None
        out = study.out / "eval"
        return cls(bench, names, sources, window, cfg, device, ev["solver"], ev["steps"], out)

    def score(
        self, method: str, spec: str, forecaster: Forecaster, progress: Progress
    ) -> tuple[dict[str, Any], list[str]]:
        """One method's slim scores by source and its failures."""
        scores, failures = evaluate_method(
            self.bench, self.names, self.sources, method, spec, forecaster, self.out,
            self.cfg, self.window, progress,
        )  # fmt: skip
        slim = {s: {k: r.get(k) for k in _KEPT_METRICS} for s, r in scores.items()}
        return slim, failures

    def load(self, spec: MethodSpec) -> Forecaster:
        method = load_method(spec, self.device, solver=self.solver, steps=self.steps, **self.window)
        if isinstance(method, RunFolders):
            raise ForecastError(f"{spec}: run folders, not a model to evaluate")
        return method


def evaluate_variant(variant: Variant, study: Study, ctx: EvalContext) -> dict[str, Any]:
    """The variant's scores: ``generator`` and/or ``vae`` by source, and the failures."""
    run_dir = study.out / "runs" / variant.name
    out: dict[str, Any] = {"failures": []}
    quiet: Progress = lambda _: None  # noqa: E731
    if variant.generator:
        spec = MethodSpec("trained", str(run_dir / "trained"))
        out["generator"], failed = ctx.score(variant.name, str(spec), ctx.load(spec), quiet)
        out["failures"] += failed
    if variant.vae:
        spec = MethodSpec("vae", str(run_dir / "vae" / "final"))
        out["vae"], failed = ctx.score(f"{variant.name}-vae", str(spec), ctx.load(spec), quiet)
        out["failures"] += failed
    return out


def evaluate_reference(ctx: EvalContext) -> dict[str, Any]:
    """Static, constant-velocity and true futures on the same clips (context rows)."""
    w = ctx.window
    methods: dict[str, Forecaster] = {
        "static": BaselineForecaster("static", w["grid"], w["history"], w["future"]),
        "constant velocity": BaselineForecaster("constvel", w["grid"], w["history"], w["future"]),
        "ground truth": TrueFuture(w["grid"], w["history"], w["future"]),
    }
    out: dict[str, Any] = {"generator": {}, "failures": []}
    for name, forecaster in methods.items():
        key = name.replace(" ", "_")
        scores, failed = ctx.score(key, f"reference:{key}", forecaster, lambda _: None)
        out["generator"][name] = scores
        out["failures"] += failed
    return out


# ----------------------------------------------------------------------------- tables


def _cells(results: dict[str, Any], kind: str, name: str, keys: tuple[str, ...]) -> dict:
    scores = results.get(name, {}).get(kind) or {}
    return {s: {k: r.get(k) for k in keys} for s, r in scores.items()}


def _label(name: str, early: int | None) -> str:
    if name == "early" and early is not None:
        return f"{early} flow steps (early)"
    return _BY_NAME[name].label


def _ordering(
    results: dict[str, Any], kind: str, keys: tuple[str, ...], rows: tuple[str, ...],
    sources: list[str],
) -> dict[str, dict[str, dict[str, bool | None]]]:  # fmt: skip
    """For each ablated row, metric and source: is Ours lower (the paper's ordering)?"""
    ours = _cells(results, kind, "full", keys)
    out: dict[str, dict[str, dict[str, bool | None]]] = {}
    for name in rows:
        if name == "full":
            continue
        row = _cells(results, kind, name, keys)
        out[name] = {}
        for key in keys:
            out[name][key] = {}
            for s in sources:
                a, b = ours.get(s, {}).get(key), row.get(s, {}).get(key)
                ok = a is not None and b is not None and math.isfinite(a) and math.isfinite(b)
                out[name][key][s] = bool(a < b) if ok else None
    return out


_METRIC_LABELS = {
    "fvmd_long": "FVMD-Long",
    "flow_tv": "FlowTV",
    "div_curl_energy": "DivCurlE",
    "vepe": "VEPE (px)",
}


def _cell(value: Any) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.4g}"


def format_table(
    rows: dict[str, dict[str, dict[str, Any]]], keys: tuple[str, ...], sources: list[str]
) -> str:
    """The paper's layout: one block of rows per metric, one row per setting, the sources
    as columns; four significant digits (the differences are small at small scale)."""
    lines = [
        "| Metric | Setting | " + " | ".join(sources) + " |",
        "|---|---|" + "---|" * len(sources),
    ]
    for key in keys:
        for j, (label, per_source) in enumerate(rows.items()):
            cells = [_cell(per_source.get(s, {}).get(key)) for s in sources]
            first = _METRIC_LABELS[key] if j == 0 else ""
            lines.append(f"| {first} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ordering_lines(order: dict[str, Any], early: int | None) -> list[str]:
    held = [v for r in order.values() for m in r.values() for v in m.values() if v is not None]
    lines = [
        f"Ours lower than the ablated row (the paper's ordering) in {sum(held)} of "
        f"{len(held)} cells:"
    ]
    for name, per_key in order.items():
        marks = ", ".join(
            f"{_METRIC_LABELS[k]} {s} {'yes' if v else 'no'}"
            for k, per_source in per_key.items()
            for s, v in per_source.items()
            if v is not None
        )
        lines.append(f"- {_label(name, early)}: {marks or 'no scores'}")
    return lines


def format_tables(
    results: dict[str, Any], sources: list[str], header: str, early: int | None = None
) -> tuple[str, dict[str, Any]]:
    """The three tables (Markdown, the paper's layout: metric x setting rows, sources as
    columns) with the orderings under each, and their JSON document."""
    parts = [header]
    doc: dict[str, Any] = {"sources": sources, "tables": {}}
    for number, (title, kind, keys, rows) in TABLES.items():
        table = {_label(n, early): _cells(results, kind, n, keys) for n in rows}
        order = _ordering(results, kind, keys, rows, sources)
        parts += [f"### Table {number}: {title}", "", format_table(table, keys, sources), ""]
        parts += _ordering_lines(order, early)
        bad = [f"{_label(n, early)}: {results[n]['reason']}" for n in rows if _failed(results, n)]
        parts += [f"- failed: {b}" for b in bad] + [""]
        doc["tables"][str(number)] = {"title": title, "rows": table, "ours_lower": order}
    reference = results.get(_REFERENCE, {}).get("generator")
    if reference:
        keys = TABLES[5][2]
        ref = {
            m: {s: {k: r.get(k) for k in keys} for s, r in v.items()} for m, v in reference.items()
        }
        parts += [
            "### Reference (not in the paper's tables): baselines and the true future",
            "",
            format_table(ref, keys, sources),
            "",
        ]
        doc["reference"] = ref
    return "\n".join(parts), json_ready(doc)


def _failed(results: dict[str, Any], name: str) -> bool:
    return results.get(name, {}).get("status") not in (None, "done")


# ----------------------------------------------------------------------------- the study


def _check_settings(study: Study) -> None:
    """Write ``OUT/study.json``, or refuse settings that differ from the saved ones."""
    path = study.out / "study.json"
    settings = study.settings()
    if path.is_file():
        saved = json.loads(path.read_text())
        diff = sorted(k for k in settings.keys() | saved.keys() if saved.get(k) != settings.get(k))
        if diff:
            raise StudyError(
                f"{study.out} holds a study started with other settings ({', '.join(diff)}); "
                "repeat them to resume, or choose another --out"
            )
    atomic_write_text(path, json.dumps(settings, indent=2) + "\n")


def _result_path(study: Study, name: str) -> Path:
    return study.out / "results" / f"{name}.json"


def _saved_result(study: Study, name: str) -> dict[str, Any] | None:
    path = _result_path(study, name)
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except ValueError:
        return None  # a torn file: the variant runs again
    return result if result.get("status") == "done" else None


def _timed_training(variant: Variant, study: Study, recipe: dict[str, Any]) -> float:
    t0 = time.perf_counter()
    train_variant(variant, study, recipe)
    return round(time.perf_counter() - t0, 1)


def _evaluated(
    variant: Variant, study: Study, ctx: EvalContext, training: Future[float]
) -> dict[str, Any]:
    """The results record of a variant whose training ``training`` ended."""
    run_dir = study.out / "runs" / variant.name
    result: dict[str, Any] = {
        "variant": variant.name,
        "label": variant.label,
        "sets": list(variant.sets),
        "run_dir": str(run_dir),
    }
    err = training.exception()
    if err is None:
        result["train_wall_s"] = training.result()
        t0 = time.perf_counter()
        try:
            result.update(evaluate_variant(variant, study, ctx))
        except (RuntimeError, OSError, ValueError, ForecastError) as eval_err:
            err = eval_err
        result["eval_wall_s"] = round(time.perf_counter() - t0, 1)
    if err is None:
        result["status"] = "done"
    else:
        expected = isinstance(err, RuntimeError | OSError | ValueError | ForecastError)
        result["status"] = "failed"
        result["reason"] = str(err) if expected else f"{type(err).__name__}: {err}"
    return result


def _run_variants(
    study: Study,
    recipe: dict[str, Any],
    ctx: EvalContext,
    todo: list[Variant],
    results: dict[str, Any],
    progress: Progress,
) -> None:
    """Train ``todo`` (at most ``study.jobs`` at once, each after the variant it starts
    from), evaluate each as its training ends; results and tables written as they come."""
    pending = list(todo)
    running: dict[Future[float], Variant] = {}

    def record(variant: Variant, result: dict[str, Any]) -> None:
        path = _result_path(study, variant.name)
        atomic_write_text(path, json.dumps(json_ready(result), indent=2))
        results[variant.name] = result
        progress(f"[ablate] {variant.name}: {result['status']} {result.get('reason', '')}".rstrip())
        _write_tables(study, recipe, ctx, results)  # what is done so far, if interrupted

    with ThreadPoolExecutor(max_workers=study.jobs) as pool:
        while pending or running:
            for variant in list(pending):
                if len(running) >= study.jobs:
                    break
                if variant.base and variant.base not in results:
                    continue  # its base is still training
                pending.remove(variant)
                if variant.base and results[variant.base].get("status") != "done":
                    record(
                        variant, {"status": "failed", "reason": f"blocked: {variant.base} failed"}
                    )
                    continue
                progress(
                    f"[ablate] {variant.name}: training ({study.out}/runs/{variant.name}/train.log)"
                )
                running[pool.submit(_timed_training, variant, study, recipe)] = variant
            if running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    variant = running.pop(future)
                    progress(f"[ablate] {variant.name}: evaluating")
                    record(variant, _evaluated(variant, study, ctx, future))


def run_study(study: Study, progress: Progress = print) -> int:
    """Run (or resume) the study; returns the exit code (0 done, 1 some variants or clips
    failed, 2 nothing could start or finish). Bad settings raise :class:`StudyError`."""
    try:
        with OutputLock(study.out, what="--out folder"):
            return _study(study, progress)
    except OutputError as err:
        raise StudyError(str(err)) from None


def _study(study: Study, progress: Progress) -> int:
    recipe = resolve_recipe(study)
    _check_settings(study)
    ctx = EvalContext.create(study, recipe, prepare_bench(study, recipe, progress))
    results: dict[str, Any] = {}
    todo = []
    for variant in study.selected():
        saved = _saved_result(study, variant.name)
        if saved is None:
            todo.append(variant)
        else:
            progress(f"[ablate] {variant.name}: done earlier, skipped")
            results[variant.name] = saved
    _run_variants(study, recipe, ctx, todo, results, progress)
    results[_REFERENCE] = _saved_result(study, _REFERENCE) or _reference(study, ctx)
    return _report(study, recipe, ctx, results, progress)


def _reference(study: Study, ctx: EvalContext) -> dict[str, Any]:
    result = {"status": "done", **evaluate_reference(ctx)}
    atomic_write_text(_result_path(study, _REFERENCE), json.dumps(json_ready(result), indent=2))
    return result


def _write_tables(
    study: Study, recipe: dict[str, Any], ctx: EvalContext, results: dict[str, Any]
) -> str:
    """Write ``tables.md`` and ``tables.json`` from ``results``; returns the Markdown."""
    early = early_step(recipe, study.early_fraction)
    header = (
        f"## Ablations: recipe {study.recipe}, steps scale {study.steps_scale or 1}, "
        f"flow steps {recipe['flow']['steps']} (early checkpoint: step {early}), on-policy "
        f"steps {recipe['onpolicy']['steps']}; {ctx.solver} {ctx.steps} steps, one sample per "
        f"clip; FVMD-Long over the {recipe['data']['future']}-frame future, metrics gated by "
        "the ground-truth visibility; lower is better everywhere.\n"
    )
    markdown, doc = format_tables(results, ctx.names, header, early)
    doc["settings"] = study.settings()
    doc["variants"] = {v.name: results[v.name] for v in study.selected() if v.name in results}
    atomic_write_text(study.out / "tables.md", markdown)
    atomic_write_text(study.out / "tables.json", json.dumps(json_ready(doc), indent=2))
    return markdown


def _report(
    study: Study,
    recipe: dict[str, Any],
    ctx: EvalContext,
    results: dict[str, Any],
    progress: Progress,
) -> int:
    progress(_write_tables(study, recipe, ctx, results))
    variants = [v.name for v in study.selected()]
    bad = [n for n in variants if _failed(results, n)]
    clip_failures = sum(
        len(results.get(n, {}).get("failures", [])) for n in (*variants, _REFERENCE)
    )
    progress(
        f"{len(variants) - len(bad)} of {len(variants)} variants done; failed: {bad or 'none'}; "
        f"{clip_failures} clips or run folders failed; wrote {study.out / 'tables.md'}"
    )
    if len(bad) == len(variants):
        return 2
    return 1 if bad or clip_failures else 0
