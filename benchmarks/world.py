"""How real the synthetic world moves: real video tracks vs each world, side by side.

    .venv/bin/python benchmarks/world.py --cache /tmp/world-cache            # dev videos
    .venv/bin/python benchmarks/world.py --cache DIR --split heldout          # held-out videos
    .venv/bin/python benchmarks/world.py --cache DIR --worlds rigid,calibrated --json out.json

Real side: the development videos under ``../shared/data`` (``videos/``, ``videos_more/``
and the annotated videos), resized to the quick recipe's geometry (128 x 128, stride 16),
resampled in time to the world's frame rate (16 fps) by nearest-frame selection as
``apps/bench build --fps`` does, cut into up to ``--windows`` windows of history + future
(34) frames per video, and tracked from frame 0 with the built-in tracker
(``make_tracker("flow")``). The tracks are cached in ``--cache`` (one ``.npz`` per
geometry), so reruns only draw the worlds.

Split by video (never by window), fixed by a hash of the video's name
(``trajloom.data.stream.sample_split(name, HOLDOUT)``): "train" videos are the DEV videos
that calibrate the world; the rest are HELD-OUT videos, never used to choose anything
(``--list`` prints which is which).

World side: as many windows of each world (``SceneConfig.preset``) as the real side has,
with their exact tracks (what the model trains on), or ``--world-tracks tracked``: the
rendered frames tracked by the same tracker (tracker noise on both sides).

Printed: the statistics of ``trajloom.data.realism`` per side (fractions, means and
quantiles), then each world's distance to the real side per statistic, and FVMD-16
(``trajloom.metrics``, 16-frame clips, 8 x 8 grid) between the two sets of tracks.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from trajloom.data.realism import DISTRIBUTIONS, FRACTIONS, compare, motion_statistics
from trajloom.data.stream import sample_split
from trajloom.data.synthetic import DYNAMICS, SceneConfig, make_scene, scene_seed
from trajloom.data.tracking import make_tracker
from trajloom.data.video import VideoReadError, probe_video, read_frames
from trajloom.metrics import FVMDConfig, fvmd_features, fvmd_from_features
from trajloom_bench.build import BenchConfig, video_windows
from trajloom_train.recipes import get_recipe

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
#: Fraction of real videos held out of calibration (by a hash of "folder/name").
HOLDOUT = 0.3
#: Real videos: folder under DATA and the files or frame folders to read there.
SOURCES = (
    ("videos", "*.mp4"),
    ("videos_more", "*.mp4"),
    ("annotated/davis_bear", "*.mp4"),
    ("annotated/davis_horsejump-high", "frames"),
    ("annotated/sleap_dance", "*.mp4"),
    ("annotated/sleap_flies_clip", "*.mp4"),
)


def real_videos() -> list[tuple[str, Path]]:
    """(name, path) of every real video, name = "folder/stem" (the split key)."""
    out = []
    for folder, pattern in SOURCES:
        for path in sorted((DATA / folder).glob(pattern)):
            stem = path.stem if path.is_file() else path.parent.name
            out.append((f"{folder.split('/')[0]}/{stem}", path))
    return out


def split_of(name: str) -> str:
    return "dev" if sample_split(name, HOLDOUT) == "train" else "heldout"


def geometry(windows: int) -> BenchConfig:
    """The quick recipe's geometry and the world's frame rate, as a bench build config."""
    data = get_recipe("quick").data
    return BenchConfig(
        width=data.width,
        height=data.height,
        stride=data.stride,
        history=data.history,
        future=data.future,
        fps=SceneConfig().fps,
        windows_per_video=windows,
    )


def track_real(cfg: BenchConfig, cache: Path) -> dict[str, np.ndarray]:
    """Tracks of every real window (cached): tracks "b t n 2", visibility, video names."""
    key = f"real_{cfg.width}x{cfg.height}_s{cfg.stride}_t{cfg.window}_{cfg.fps:g}fps"
    path = cache / f"{key}_w{cfg.windows_per_video}_{cfg.tracker}.npz"
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    tracker = make_tracker(cfg.tracker)
    tracks, vis, names, skipped = [], [], [], []
    for name, video in real_videos():
        try:
            info = probe_video(video)
            windows = video_windows(info.num_frames, info.fps, cfg)
            if not windows:
                raise VideoReadError(f"{video}: shorter than one window of {cfg.window} frames")
            frames = read_frames(
                video, size=(cfg.width, cfg.height), num_frames=int(windows[-1][-1]) + 1
            )
        except VideoReadError as err:
            skipped.append(str(err))
            continue
        for idx in windows:
            result = tracker.track(frames[idx], grid=cfg.grid)
            tracks.append(result.tracks)
            vis.append(result.visibility)
            names.append(name)
        print(f"tracked {name}: {len(windows)} windows", file=sys.stderr)
    for note in skipped:
        print(f"skipped {note}", file=sys.stderr)
    out = {
        "tracks": np.stack(tracks).astype(np.float32),
        "visibility": np.stack(vis),
        "video": np.array(names),
    }
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **out)
    return out


def world_tracks(
    dynamics: str, cfg: BenchConfig, count: int, seed: int, tracked: bool
) -> tuple[np.ndarray, np.ndarray]:
    """`count` windows of world `dynamics`: exact tracks, or its frames tracked."""
    scene_cfg = SceneConfig.preset(
        dynamics,
        width=cfg.width,
        height=cfg.height,
        stride=cfg.stride,
        num_frames=cfg.window,
        render_frames=tracked,
    )
    tracker = make_tracker(cfg.tracker) if tracked else None
    tracks, vis = [], []
    for i in range(count):
        scene = make_scene(scene_seed(seed, i), scene_cfg)
        if tracker is not None and scene.frames is not None:
            result = tracker.track(scene.frames, grid=cfg.grid)
            tracks.append(result.tracks)
            vis.append(result.visibility)
        else:
            tracks.append(scene.tracks)
            vis.append(scene.visibility)
    return np.stack(tracks), np.stack(vis)


def fvmd16(
    real: tuple[np.ndarray, np.ndarray],
    world: tuple[np.ndarray, np.ndarray],
    grid_hw: tuple[int, int],
) -> float:
    """FVMD (combined) between two unpaired sets of tracks, 16-frame clips."""
    cfg = FVMDConfig(clip_len=16)
    rv, ra = fvmd_features(real[0], real[1], grid_hw=grid_hw, config=cfg)
    wv, wa = fvmd_features(world[0], world[1], grid_hw=grid_hw, config=cfg)
    return fvmd_from_features(rv, ra, wv, wa, cfg).combined


def _fmt(value: float) -> str:
    if not np.isfinite(value):
        return "-"
    if float(value).is_integer() and abs(value) >= 1:
        return str(int(value))
    if value == 0 or 0.01 <= abs(value) < 1000:
        return f"{value:.3f}"
    return f"{value:.2e}"


def table(header: list[str], rows: list[tuple[str, list[float]]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, values in rows:
        lines.append("| " + " | ".join([name, *(_fmt(v) for v in values)]) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cache", type=Path, required=True, help="folder for the real tracks (.npz)"
    )
    parser.add_argument("--split", choices=("dev", "heldout", "all"), default="dev")
    parser.add_argument(
        "--worlds", default=",".join(DYNAMICS), help="comma-separated DYNAMICS names"
    )
    parser.add_argument("--windows", type=int, default=3, help="windows per real video")
    parser.add_argument("--seed", type=int, default=2028, help="seed of the worlds' scenes")
    parser.add_argument("--world-tracks", choices=("exact", "tracked"), default="exact")
    parser.add_argument("--list", action="store_true", help="print each video's split and exit")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    worlds = [w for w in args.worlds.split(",") if w]
    unknown = [w for w in worlds if w not in DYNAMICS]
    if unknown or args.windows < 1:
        print(
            f"world.py: bad --worlds {unknown} or --windows {args.windows}; worlds are "
            f"{sorted(DYNAMICS)}, windows >= 1",
            file=sys.stderr,
        )
        return 2
    if args.list:
        for name, _path in real_videos():
            print(f"{split_of(name):8s} {name}")
        return 0
    cfg = geometry(args.windows)
    started = time.time()
    real = track_real(cfg, args.cache)
    keep = np.array([args.split in ("all", split_of(str(v))) for v in real["video"]])
    if not keep.any():
        print(f"world.py: no real windows in split {args.split!r}", file=sys.stderr)
        return 2
    real_set = (real["tracks"][keep], real["visibility"][keep])
    size = (cfg.width, cfg.height)
    grid_hw = (cfg.height // cfg.stride, cfg.width // cfg.stride)
    stats = {"real": motion_statistics(*real_set, size)}
    distances, fvmds = {}, {}
    for name in worlds:
        sets = world_tracks(name, cfg, int(keep.sum()), args.seed, args.world_tracks == "tracked")
        stats[name] = motion_statistics(*sets, size)
        distances[name] = compare(stats["real"], stats[name])
        fvmds[name] = fvmd16(real_set, sets, grid_hw)
    videos = sorted(set(real["video"][keep].tolist()))
    print(
        f"real: {keep.sum()} windows of {len(videos)} {args.split} videos at "
        f"{cfg.width}x{cfg.height} stride {cfg.stride}, {cfg.window} frames at {cfg.fps:g} fps; "
        f"worlds: {args.world_tracks} tracks, seed {args.seed} ({time.time() - started:.0f} s)\n"
    )
    summaries = {k: s.summary() for k, s in stats.items()}
    rows = [(k, [summaries[s][k] for s in stats]) for k in summaries["real"]]
    print(table(["statistic", *stats], rows) + "\n")
    names = [*FRACTIONS, *DISTRIBUTIONS]
    rows = [(k, [distances[w][k] for w in worlds]) for k in names]
    rows.append(("FVMD-16", [fvmds[w] for w in worlds]))
    print("distance to real (fractions: |difference|; distributions: Wasserstein-1)\n")
    print(table(["statistic", *worlds], rows))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "split": args.split,
                    "videos": videos,
                    "summary": summaries,
                    "distance": distances,
                    "fvmd16": fvmds,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
