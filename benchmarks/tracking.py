"""Point tracking: accuracy on real annotations and synthetic scenes, and speed.

    .venv/bin/python benchmarks/tracking.py               # every figure of the tracking section
    .venv/bin/python benchmarks/tracking.py --quick       # fewer frames, sets and scenes
    .venv/bin/python benchmarks/tracking.py --ablations   # only the design choices, one by one
    .venv/bin/python benchmarks/tracking.py --tracker static   # floor: points that never move
    .venv/bin/python benchmarks/tracking.py --tracker cotracker3 \\
        --option repo_path=/path/co-tracker --option weights_path=/path/scaled_offline.pth

Figures (TAP-Vid definitions, ``trajloom.data.tracking.metrics``):

1. real annotated sets under ``../shared/data/annotated`` (BADJA joints on DAVIS bear
   and horsejump-high, SLEAP dance and flies): each point queried at its first visible
   annotated frame, scored on the later annotated frames: position accuracy within
   1, 2, 4, 8, 16 px at 256x256 and their mean (d_avg), occlusion accuracy (OA),
   average Jaccard (AJ); for the flies (1024x1024) frames 1000-1299, where they move;
2. synthetic scenes with exact ground truth (``trajloom.data.synthetic``), the grid
   queried at frame 0: the same plus AJ;
3. speed at 832x480: frames per second of wall-clock time for the 390-point grid
   (stride 32) and, for configurations without LK re-anchoring (the setting for dense
   tracks), for every pixel (399,360 points), plus the flow alone;
   also frames per CPU-second (process time over all threads), which a loaded machine
   does not distort: on 2 free cores, wall fps is at most 2x that.

With ``--ablations`` (instead of the above) the flow tracker is run with each design choice
undone, on bear, horsejump-high, the first 150 frames of dance and 4 synthetic scenes of
48 frames: how the defaults were chosen.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path

import cv2
import numpy as np

from trajloom.data.tracking import FlowTracker, FlowTrackerConfig, make_tracker
from trajloom.data.tracking.evaluation import evaluate_on_clip, evaluate_on_scene, load_annotated
from trajloom.data.tracking.metrics import THRESHOLDS, mean_metrics

ROOT = Path(__file__).resolve().parents[1]
ANNOTATED = ROOT.parent / "shared" / "data" / "annotated"
VIDEOS = ROOT.parent / "shared" / "data" / "videos"
#: (folder, (first frame, number of frames) to evaluate or None for all). The flies do not
#: move before frame ~950 (a tracker that predicts no motion scores 98% there), so the
#: window is frames 1000-1299, where they walk.
SETS = (
    ("davis_bear", None),
    ("davis_horsejump-high", None),
    ("sleap_dance", None),
    ("sleap_flies_clip", (1000, 300)),
)
ABLATIONS = {
    "default": {},
    "no LK re-anchoring": {"refine": "none"},
    "strict FB check (0.01, 0.5)": {"fb_alpha": 0.01, "fb_beta": 0.5},
    "no FB check": {"fb_alpha": 1e9},
    "every failed FB step hides (occlusion_frames=1)": {"occlusion_frames": 1},
    "leaving the image never hides (outside_margin=None)": {"outside_margin": None},
    "hidden points coast (extrapolate)": {"occluded_motion": "extrapolate"},
    "DIS fast preset": {"preset": "fast"},
    "DIS at full resolution (finest scale 0)": {"finest_scale": 0},
    "flow at half resolution": {"scale": 0.5},
}


class StaticTracker:
    """Reference floor: every point stays at its query position, always visible."""

    name = "static"

    def track(self, frames, queries=None, *, stride=None, grid=None):
        from trajloom.data.tracking.tracker import resolve_queries

        prepared = resolve_queries(frames, queries, stride=stride, grid=grid)
        t, n = len(prepared.frames), len(prepared.queries)
        tracks = np.broadcast_to(prepared.queries[None, :, 1:], (t, n, 2)).copy()
        return prepared.finish(tracks, np.ones((t, n), bool))


def _row(name: str, m: dict[str, float]) -> str:
    cells = [f"{100 * m[f'pts_within_{d}']:.1f}" for d in THRESHOLDS]
    cells += [
        f"**{100 * m['average_pts_within_thresh']:.1f}**",
        f"{100 * m['occlusion_accuracy']:.1f}",
        f"{100 * m['average_jaccard']:.1f}",
        f"{int(m['points'])}",
        f"{int(m['frames'])}",
        f"{m['frames'] / m['seconds']:.1f}",
    ]
    return f"| {name} | " + " | ".join(cells) + " |"


HEADER = (
    "| set | <1 | <2 | <4 | <8 | <16 | d_avg | OA | AJ | points | frames | fps |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def load_sets(quick: bool, skip: tuple[str, ...] = ()) -> list[tuple[str, object, np.ndarray]]:
    from trajloom.data.video import read_frames

    out = []
    for name, limit in SETS[:2] if quick else SETS:
        if name in skip:
            continue
        folder = ANNOTATED / name
        if not folder.is_dir():
            print(f"(skipping {name}: {folder} is absent)")
            continue
        clip = load_annotated(folder)
        if limit is not None:
            clip = clip.window(*limit)
        if quick:
            clip = clip.window(0, min(clip.num_frames, 40))
        frames = read_frames(clip.video, start=clip.start, num_frames=clip.num_frames)
        out.append((name, clip, frames))
    return out


def real_table(tracker, sets) -> dict[str, float]:
    print(HEADER)
    rows = []
    for name, clip, frames in sets:
        m = evaluate_on_clip(tracker, frames, clip)
        rows.append(m)
        print(_row(name, m), flush=True)
    mean = mean_metrics(rows)
    mean["seconds"] = sum(m["seconds"] for m in rows)
    mean["frames"] = sum(m["frames"] for m in rows)
    mean["points"] = sum(m["points"] for m in rows)
    print(_row("mean of sets", mean))
    return mean


def synthetic_scenes(quick: bool):
    from trajloom.data.synthetic import SceneConfig, make_scene

    count, frames = (3, 24) if quick else (12, 48)
    config = SceneConfig(width=512, height=288, stride=16, num_frames=frames)
    return [make_scene(seed, config) for seed in range(count)]


def synthetic_table(tracker, scenes) -> dict[str, float]:
    rows = [evaluate_on_scene(tracker, s.frames, s.tracks, s.visibility) for s in scenes]
    mean = mean_metrics(rows)
    mean["seconds"] = sum(m["seconds"] for m in rows)
    mean["frames"] = sum(m["frames"] for m in rows)
    mean["points"] = sum(m["points"] for m in rows)
    return mean


def speed_frames(num_frames: int) -> tuple[np.ndarray, str]:
    """832x480 frames: a real video when present, else a drifting texture."""
    video = VIDEOS / "sam2_bedroom_kids_jumping_960x540_200f.mp4"
    if video.is_file():
        from trajloom.data.video import read_video

        return read_video(video, size=(832, 480), num_frames=num_frames), video.name
    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur(rng.random((600, 1000)).astype(np.float32), (0, 0), 2)
    tex = ((tex - tex.mean()) / tex.std() * 45 + 128).clip(0, 255).astype(np.uint8)
    frames = [tex[60 + k // 2 : 540 + k // 2, 80 + k : 912 + k] for k in range(num_frames)]
    return np.repeat(np.stack(frames)[..., None], 3, -1), "synthetic texture"


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def speed_table(frames: np.ndarray, configs: dict[str, dict]) -> None:
    """Grid (390 points) for every config; dense (every pixel) for those without LK."""
    t = len(frames)
    print("| tracker | points | fps (wall) | fps per CPU-second |\n|---|---|---|---|")
    for name, cfg in configs.items():
        tracker = FlowTracker(FlowTrackerConfig(**cfg))
        runs = [("grid, stride 32", 32)]
        if tracker.config.refine == "none":
            runs.append(("dense, every pixel", 1))
        for label, stride in runs:
            wall, cpu = timed(lambda tr=tracker, s=stride: tr.track(frames, stride=s))
            n = len(range(0, 480, stride)) * len(range(0, 832, stride))
            print(f"| {name}: {label} | {n} | {t / wall:.1f} | {t / cpu:.1f} |", flush=True)
    from trajloom.data.tracking.flow import dis_flow

    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    for preset in ("medium", "fast"):

        def flows(preset=preset) -> None:
            for a, b in itertools.pairwise(gray):
                dis_flow(a, b, preset)
                dis_flow(b, a, preset)

        wall, cpu = timed(flows)
        print(
            f"| DIS {preset} forward + backward flow only | - | {(t - 1) / wall:.1f} | "
            f"{(t - 1) / cpu:.1f} |"
        )


def parse_options(items: list[str]) -> dict:
    out: dict = {}
    for item in items:
        key, _, value = item.partition("=")
        for cast in (int, float):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key] = {"true": True, "false": False}.get(value.lower(), value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames, sets and scenes")
    parser.add_argument(
        "--ablations", action="store_true", help="also run each design choice undone"
    )
    parser.add_argument(
        "--tracker", default="flow", help="flow | alltracker | cotracker3 | static (no motion)"
    )
    parser.add_argument("--option", action="append", default=[], help="config field=value")
    parser.add_argument(
        "--threads", type=int, default=2, help="OpenCV threads (2 = the reference machine)"
    )
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    if args.tracker == "static":
        tracker = StaticTracker()
    else:
        tracker = make_tracker(args.tracker, **parse_options(args.option))
    print(f"# tracking benchmark: {args.tracker} {parse_options(args.option)}")
    print(
        f"machine: {os.cpu_count()} CPUs, OpenCV threads {cv2.getNumThreads()}, "
        f"load average {os.getloadavg()[0]:.1f}\n"
    )

    if args.ablations:
        ablations(args.quick)
        return
    sets = load_sets(args.quick)
    if sets:
        print("## real annotated sets\n")
        real_table(tracker, sets)
    print("\n## synthetic scenes (512x288, grid stride 16, queried at frame 0)\n")
    scenes = synthetic_scenes(args.quick)
    print(HEADER)
    print(_row(f"mean of {len(scenes)} scenes", synthetic_table(tracker, scenes)))

    if args.tracker == "flow":
        frames, source = speed_frames(20 if args.quick else 40)
        print(f"\n## speed at 832x480 ({len(frames)} frames of {source})\n")
        configs = {
            "default": {},
            "DIS medium, no LK": {"refine": "none"},
            "DIS fast, no LK": {"preset": "fast", "refine": "none"},
        }
        if not args.quick:
            configs |= {
                "DIS fast": {"preset": "fast"},
                "half resolution": {"scale": 0.5},
                "half resolution, DIS fast, no LK": {
                    "scale": 0.5,
                    "preset": "fast",
                    "refine": "none",
                },
            }
        speed_table(frames, configs)


def ablations(quick: bool) -> None:
    """Each design choice of the flow tracker undone, on a subset of the real sets."""
    sets = [
        (name, clip.window(0, min(150, clip.num_frames)), frames[:150])
        for name, clip, frames in load_sets(quick, skip=("sleap_flies_clip",))
    ]
    scenes = synthetic_scenes(quick)[:4]
    print("## ablations (mean of the real sets | mean of the synthetic scenes)\n")
    print(
        f"real: {', '.join(f'{n} ({c.num_frames} frames)' for n, c, _ in sets)}; "
        f"synthetic: {len(scenes)} scenes\n"
    )
    print(
        "| variant | real d_avg | real OA | real AJ | synth d_avg | synth OA | synth AJ | real fps |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, cfg in ABLATIONS.items():
        variant = FlowTracker(FlowTrackerConfig(**cfg))
        real = real_table_quiet(variant, sets)
        synth = synthetic_table(variant, scenes)
        print(
            f"| {name} | {100 * real['average_pts_within_thresh']:.1f} | "
            f"{100 * real['occlusion_accuracy']:.1f} | {100 * real['average_jaccard']:.1f} | "
            f"{100 * synth['average_pts_within_thresh']:.1f} | "
            f"{100 * synth['occlusion_accuracy']:.1f} | {100 * synth['average_jaccard']:.1f} | "
            f"{real['frames'] / real['seconds']:.1f} |",
            flush=True,
        )


def real_table_quiet(tracker, sets) -> dict[str, float]:
    rows = [evaluate_on_clip(tracker, frames, clip) for _, clip, frames in sets]
    mean = mean_metrics(rows)
    mean["seconds"] = sum(m["seconds"] for m in rows)
    mean["frames"] = sum(m["frames"] for m in rows)
    return mean


if __name__ == "__main__":
    main()
