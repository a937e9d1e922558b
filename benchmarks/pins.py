"""Steerable futures: how well guided sampling meets pins, and what it costs (issue 17).

On the held-out synthetic clips of an ``apps/train`` run (the split its ``eval`` stage
scores; no training or validation clip is among them), every clip is sampled unguided
and with pins, from the same noise seed. Each clip gets ``--pins`` pins on points
visible at the boundary frame, at random frames of the second half of the future, with
targets of two kinds:

* ``true``: the point's true future position (a user pinning where it really goes);
* ``moved``: the unguided sample's position moved ``--offset`` px in a random direction
  (a user dragging it elsewhere), kept inside the image;
* ``hidden`` (sets with a visibility head): ``--hidden`` "stay hidden" pins per clip, each
  over ``--hidden-frames`` consecutive frames starting in the second half of the future,
  on points visible at the boundary and (truly) all future.

Reported per configuration: the pin error in pixels (median, 90th percentile, max; the
unguided sample's error at the same pins for reference), FVMD / FlowTV / DivCurlE of the
futures (``trajloom.metrics.score_method``, ungated, as the run's ``eval`` stage scores),
neighbour coherence — ``follow``: the mean over the 8 grid neighbours of a pinned point
of their displacement (guided minus unguided, at the pinned frame) projected on the
pinned point's displacement, as a fraction of it (1: they move with it, 0: it tears
away alone), ``far``: the mean displacement of points 3 or more cells from every pin —
and the wall time per sample. Hidden pins get their own table: ``met`` the fraction of
hidden pins whose point the visibility head predicts invisible (probability at or below
the set's threshold, read from ``visibility_prob``, which the pins do not overwrite) at
every pinned frame, for the guided and for the unguided sample; ``inside`` the fraction
whose decoded (unclamped) point is inside the image at every pinned frame; ``own move``
the pinned point's mean displacement there (guided minus unguided); ``far move`` /
``far flips`` the mean displacement and the fraction of visibility flips of points 3 or
more cells from every pin.

    .venv/bin/python benchmarks/pins.py --run RUN_FOLDER --clips 16   # a run of apps/train
    .venv/bin/python benchmarks/pins.py            # trains one first: quick recipe, steps x 0.1
    .venv/bin/python benchmarks/pins.py --quick    # smoke run: steps x 0.02, 4 clips

Without ``--run`` the run folder is ``benchmarks/out/pins/quick-<scale>`` (made by
``apps/train all --recipe quick --steps-scale <scale>`` when it holds no trained set).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trajloom.data.formats import RunFolder, write_run_folder
from trajloom.encoding import query_points
from trajloom.flow.guidance import GuidanceConfig
from trajloom.flow.pins import Pin
from trajloom.flow.pipeline import TrajLoomPipeline
from trajloom.flow.visibility import inside_image
from trajloom.metrics import FVMDConfig, score_method
from trajloom_train.config import recipe_from_dict
from trajloom_train.data import EVAL, SyntheticSplit


def choose_pins(clip: Any, free: np.ndarray, k: int, kind: str, offset: float, rng) -> list[Pin]:
    """``k`` pins on distinct points visible at the boundary and at the pinned frame."""
    tf = clip.fut_tracks.shape[0]
    ok = clip.hist_vis[-1] & clip.fut_vis.all(axis=0)
    points = rng.permutation(np.flatnonzero(ok))[:k]
    pins = []
    for p in points:
        f = int(rng.integers(tf // 2, tf))
        if kind == "true":
            target = clip.fut_tracks[f, p]
        else:
            angle = rng.uniform(0, 2 * np.pi)
            target = free[f, p] + offset * np.array([np.cos(angle), np.sin(angle)])
        pins.append(Pin(frames=(f,), targets=(tuple(float(v) for v in target),), point=int(p)))
    return pins


def choose_hidden(clip: Any, k: int, span: int, rng) -> list[Pin]:
    """``k`` hidden pins on distinct points visible at the boundary and all future, each
    over ``span`` consecutive frames starting in the second half of the future."""
    tf = clip.fut_tracks.shape[0]
    ok = clip.hist_vis[-1] & clip.fut_vis.all(axis=0)
    points = rng.permutation(np.flatnonzero(ok))[:k]
    starts = [int(rng.integers(tf // 2, tf - span + 1)) for _ in points]
    return [
        Pin(frames=tuple(range(f, f + span)), point=int(p), kind="hidden")
        for p, f in zip(points, starts, strict=True)
    ]


def far_mask(pins: list[Pin], grid_hw: tuple[int, int]) -> np.ndarray:
    """``"n"`` bool: points 3 or more grid cells (Chebyshev) from every pinned point."""
    gh, gw = grid_hw
    rows, cols = np.divmod(np.arange(gh * gw), gw)
    far = np.ones(gh * gw, bool)
    for pin in pins:
        assert pin.point is not None
        far &= np.maximum(abs(rows - rows[pin.point]), abs(cols - cols[pin.point])) >= 3
    return far


def hidden_scores(pipe, out, free_out, pins: list[Pin]) -> dict[str, list[float]]:
    """Per hidden pin: met (guided, unguided), inside, own move; per clip: far move, flips."""
    threshold = pipe.config.visibility_threshold
    prob, free_prob = out.visibility_prob[0, 0].numpy(), free_out.visibility_prob[0, 0].numpy()
    tracks, free = out.tracks[0, 0].numpy(), free_out.tracks[0, 0].numpy()
    with torch.no_grad():
        raw = pipe.decode_points(out.latents[0])[0]  # "tf n 2" unclamped px
    with torch.no_grad():
        free_raw = pipe.decode_points(free_out.latents[0])[0]
    keys = ("met", "free_met", "inside", "free_inside", "own_move")
    s: dict[str, list[float]] = {k: [] for k in keys}
    for pin in pins:
        f, p = list(pin.frames), pin.point
        s["met"].append(float((prob[f, p] <= threshold).all()))
        s["free_met"].append(float((free_prob[f, p] <= threshold).all()))
        s["inside"].append(float(inside_image(raw[f, p], pipe.grid).all()))
        s["free_inside"].append(float(inside_image(free_raw[f, p], pipe.grid).all()))
        s["own_move"].append(float(np.linalg.norm(tracks[f, p] - free[f, p], axis=-1).mean()))
    far = far_mask(pins, (pipe.grid.grid_h, pipe.grid.grid_w))
    flips = out.visibility[0, 0].numpy() != free_out.visibility[0, 0].numpy()
    s["far_move"] = [float(np.linalg.norm(tracks - free, axis=-1)[:, far].mean())]
    s["far_flips"] = [float(flips[:, far].mean())]
    return s


def clip_target(pins: list[Pin], size: tuple[int, int]) -> list[Pin]:
    """Targets clipped into the image (a moved target may fall outside)."""
    w, h = size
    return [
        Pin(
            frames=p.frames,
            targets=tuple(
                (min(max(x, 0.0), w - 1.0), min(max(y, 0.0), h - 1.0)) for x, y in p.targets
            ),
            point=p.point,
        )
        for p in pins
    ]


def coherence(
    guided: np.ndarray, free: np.ndarray, pins: list[Pin], grid_hw: tuple[int, int]
) -> tuple[list[float], list[float]]:
    """Per pin: neighbours' ``follow`` fraction; per clip: mean move of far points."""
    gh, gw = grid_hw
    rows, cols = np.divmod(np.arange(gh * gw), gw)
    follows, near_any = [], np.zeros(gh * gw, bool)
    for pin in pins:
        assert pin.point is not None
        f, p = pin.frames[0], pin.point
        cheb = np.maximum(abs(rows - rows[p]), abs(cols - cols[p]))
        near_any |= cheb < 3
        d = guided[f] - free[f]
        dp = d[p]
        if np.linalg.norm(dp) < 1.0:
            continue  # the pin hardly moved the point: nothing to follow
        nb = cheb == 1
        follows.append(float(np.mean(d[nb] @ dp) / (dp @ dp)))
    far = np.linalg.norm(guided - free, axis=-1)[:, ~near_any]
    return follows, [float(far.mean())] if far.size else []


def sample(pipe, clip, seed, steps, pins, guidance):
    """One future of ``clip``, with its history frames and caption when the set reads them."""
    video = pipe.video_encoder is not None and pipe.generator.config.use_video_cond
    frames = clip.frames[: clip.history] if video and clip.frames is not None else None
    start = time.perf_counter()
    out = pipe(
        torch.from_numpy(clip.hist_tracks),
        torch.from_numpy(clip.hist_vis),
        frames=None if frames is None else torch.from_numpy(frames),
        caption=clip.caption if pipe.text_encoder is not None else None,
        steps=steps,
        seed=seed,
        constraints=pins or None,
        guidance=guidance,
    )
    return out, time.perf_counter() - start


ROOT = Path(__file__).resolve().parents[1]


def ensure_run(scale: float) -> Path:
    """``benchmarks/out/pins/quick-<scale>``, trained by apps/train when it has no trained set."""
    runs = ROOT / "benchmarks" / "out" / "pins"
    name = f"quick-{scale:g}"
    if not (runs / name / "trained" / "pipeline.json").is_file():
        cmd = [sys.executable, str(ROOT / "apps" / "train"), "all", "--recipe", "quick"]
        cmd += ["--steps-scale", f"{scale:g}", "--runs-dir", str(runs), "--name", name]
        print("training:", " ".join(cmd), flush=True)
        subprocess.run([*cmd, "--no-progress"], check=True)
    return runs / name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=None, help="an apps/train run folder")
    ap.add_argument("--quick", action="store_true", help="smoke run (nox -s bench)")
    ap.add_argument("--clips", type=int, default=None, help="default 16 (--quick: 4)")
    ap.add_argument("--pins", type=int, default=2, help="pins per clip")
    ap.add_argument("--steps", type=int, default=10, help="Euler steps")
    ap.add_argument("--offset", type=float, default=12.0, help="px of the 'moved' targets")
    ap.add_argument("--spreads", default="0,1.5", help="GuidanceConfig.spread values")
    ap.add_argument("--inner-steps", type=int, default=2)
    ap.add_argument("--kinds", default="true,moved,hidden", help="pin kinds to run")
    ap.add_argument("--hidden", type=int, default=2, help="hidden pins per clip (0: none)")
    ap.add_argument("--hidden-frames", type=int, default=4, help="frames of each hidden pin")
    ap.add_argument("--keep", type=float, default=1.0, help="GuidanceConfig.keep (hidden pins)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.clips is None:
        args.clips = 4 if args.quick else 16
    if args.run is None:
        args.run = ensure_run(0.02 if args.quick else 0.1)

    recipe = recipe_from_dict(json.loads((args.run / "config.json").read_text()))
    pipe = TrajLoomPipeline.from_pretrained(args.run / "trained")
    grid = pipe.grid
    split = SyntheticSplit(recipe.data, recipe.seed, EVAL)
    configs = [("unguided", None, None)] + [
        (f"{kind}, spread {s}", kind, GuidanceConfig(spread=float(s), inner_steps=args.inner_steps))
        for kind in ("true", "moved")
        if kind in args.kinds.split(",")
        for s in args.spreads.split(",")
    ]
    if "hidden" in args.kinds.split(",") and args.hidden:
        if pipe.visibility is not None:
            hidden = GuidanceConfig(inner_steps=args.inner_steps, keep=args.keep)
            configs.append(("hidden", "hidden", hidden))
        else:
            print("this set has no visibility head: no hidden pins", flush=True)
    stats: dict[str, dict[str, list[float]]] = {
        name: {"err": [], "free_err": [], "follow": [], "far": [], "seconds": []}
        for name, _, _ in configs
    }
    hidden_stats: dict[str, list[float]] = {}
    work = Path(tempfile.mkdtemp(prefix="pins-bench-"))
    query = query_points(grid).numpy()
    for g in range(args.clips):
        clip = split.sample(g, frames=pipe.video_encoder is not None)
        seed = recipe.seed + g
        free_out, free_s = sample(pipe, clip, seed, args.steps, [], None)
        free = free_out.tracks[0, 0].numpy()
        results = {"unguided": (free_out, free_s, [])}
        for name, kind, guidance in configs[1:]:
            rng = np.random.default_rng([g, 17])
            if kind == "hidden":
                pins = choose_hidden(clip, args.hidden, args.hidden_frames, rng)
            else:
                pins = clip_target(
                    choose_pins(clip, free, args.pins, kind, args.offset, rng), grid.size
                )
            out, secs = sample(pipe, clip, seed, args.steps, pins, guidance)
            results[name] = (out, secs, pins)
            if kind == "hidden":
                for key, values in hidden_scores(pipe, out, free_out, pins).items():
                    hidden_stats.setdefault(key, []).extend(values)
        for name, (out, secs, pins) in results.items():
            tracks = out.tracks[0, 0].numpy()
            s = stats[name]
            s["seconds"].append(secs)
            for pin in (q for q in pins if q.kind == "at"):
                f, p, t = pin.frames[0], pin.point, np.array(pin.targets[0])
                s["err"].append(float(np.linalg.norm(tracks[f, p] - t)))
                s["free_err"].append(float(np.linalg.norm(free[f, p] - t)))
            if pins and name != "hidden":
                follow, far = coherence(tracks, free, pins, (grid.grid_h, grid.grid_w))
                s["follow"] += follow
                s["far"] += far
            run = RunFolder(
                query_xy=query,
                pred_tracks=tracks,
                pred_visibility=out.visibility[0, 0].numpy(),
                gt_tracks=clip.fut_tracks,
                gt_visibility=clip.fut_vis,
                pred_visibility_prob=None,
                meta={"id": clip.id, "H": grid.height, "W": grid.width},
            )
            write_run_folder(work / name.replace(", ", "_").replace(" ", "") / clip.id, run)
        print(
            f"clip {g}: " + ", ".join(f"{k} {v[1]:.1f} s" for k, v in results.items()), flush=True
        )

    fvmd_cfg = FVMDConfig(
        clip_len=recipe.eval.fvmd_clip_len, clip_stride=recipe.eval.fvmd_clip_stride
    )
    table = []
    for name, _, _ in configs:
        scored = score_method(
            work / name.replace(", ", "_").replace(" ", ""),
            fvmd_config=fvmd_cfg,
            grid_stride=float(grid.stride),
            use_visibility=False,
            fvmd_long=False,
        )
        s = stats[name]
        row = {
            "config": name,
            "pin_err_median": float(np.median(s["err"])) if s["err"] else None,
            "pin_err_p90": float(np.percentile(s["err"], 90)) if s["err"] else None,
            "pin_err_max": float(np.max(s["err"])) if s["err"] else None,
            "unguided_err_median": float(np.median(s["free_err"])) if s["free_err"] else None,
            "follow": float(np.mean(s["follow"])) if s["follow"] else None,
            "far_move": float(np.mean(s["far"])) if s["far"] else None,
            "fvmd": scored["fvmd"],
            "flow_tv": scored["flow_tv"],
            "div_curl_energy": scored["div_curl_energy"],
            "vepe": scored["vepe"],
            "seconds_per_sample": float(np.median(s["seconds"])),
        }
        table.append(row)
    hidden = {k: float(np.mean(v)) for k, v in hidden_stats.items()}
    hidden["pins"] = len(hidden_stats.get("met", []))
    print_table(table, args)
    if hidden_stats:
        print_hidden(hidden, table, args)
    if args.out is not None:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        result = {"args": settings, "rows": table, "hidden": hidden if hidden_stats else None}
        args.out.write_text(json.dumps(result, indent=1) + "\n")


def _fmt(v: Any, digits: int = 2) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def print_table(table: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\n{args.clips} held-out clips, {args.pins} pins each, Euler {args.steps}, "
        f"inner steps {args.inner_steps}\n"
    )
    print(
        "| config | pin err px (median / p90 / max) | unguided err at the pins | follow | "
        "far move px | FVMD | FlowTV | DivCurlE | VEPE | s / sample |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in table:
        err = (
            "—"
            if r["pin_err_median"] is None
            else f"{r['pin_err_median']:.2f} / {r['pin_err_p90']:.2f} / {r['pin_err_max']:.2f}"
        )
        print(
            f"| {r['config']} | {err} | {_fmt(r['unguided_err_median'])} | {_fmt(r['follow'])} | "
            f"{_fmt(r['far_move'])} | {_fmt(r['fvmd'], 1)} | {_fmt(r['flow_tv'], 3)} | "
            f"{_fmt(r['div_curl_energy'], 4)} | {_fmt(r['vepe'])} | {r['seconds_per_sample']:.2f} |"
        )


def print_hidden(
    h: dict[str, float], table: list[dict[str, Any]], args: argparse.Namespace
) -> None:
    rows = {r["config"]: r for r in table}
    print(
        f"\nhidden pins: {int(h['pins'])} ({args.hidden} per clip, {args.hidden_frames} frames "
        "each)\n"
    )
    print(
        "| config | met | inside | own move px | far move px | far flips | FVMD | FlowTV | "
        "DivCurlE | VEPE | s / sample |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, met, inside in (
        ("unguided", h["free_met"], h["free_inside"]),
        ("hidden", h["met"], h["inside"]),
    ):
        r = rows[name]
        guided = name == "hidden"
        print(
            f"| {name} | {met:.2f} | {inside:.2f} | "
            f"{_fmt(h['own_move'] if guided else None)} | "
            f"{_fmt(h['far_move'] if guided else None)} | "
            f"{_fmt(h['far_flips'] if guided else None, 3)} | {_fmt(r['fvmd'], 1)} | "
            f"{_fmt(r['flow_tv'], 3)} | {_fmt(r['div_curl_energy'], 4)} | {_fmt(r['vepe'])} | "
            f"{r['seconds_per_sample']:.2f} |"
        )


if __name__ == "__main__":
    main()
