"""Fault injection for multi-process apps/train: slow and stuck ranks at the stage
boundaries, SIGTERM and SIGINT during training, and options that cannot be honoured.

Two gloo processes on the CPU (``--procs 2``, or torchrun for the stress test). A rank is
made slow or stuck with the test-only hook ``TRAJLOOM_TEST_DELAY=RANK:POINT:SECONDS``
(``trajloom_train.distributed.injected_delay``): the process of that rank sleeps when it
reaches POINT (finish, save, validate, preview, resume, step), before the point's
collectives. Every collective must still be reached by every rank the same number of
times; a rank that never comes must end the run with one line within the collective
timeout; a stop signal must save at a step boundary every rank agrees on and resume
exactly.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trajloom_bench.ablate import Study, StudyError
from trajloom_train.checkpoint import list_checkpoints
from trajloom_train.config import scale_steps
from trajloom_train.distributed import TEST_DELAY_ENV, TIMEOUT_ENV, collective_timeout
from trajloom_train.recipes import ci

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "apps" / "train" / "__main__.py"
BENCH = ROOT / "apps" / "bench" / "__main__.py"
DDP_WARNING = "find_unused_parameters"
# Every trained stage short, with a checkpoint, a validation and (flow) a preview inside
# the stage as well as at its end.
BOUNDARIES = [
    "vae.steps=4", "vae.save_every=2", "vae.val_every=2", "vae.log_every=1",
    "flow.steps=4", "flow.save_every=2", "flow.val_every=2", "flow.preview_every=2",
    "onpolicy.steps=2", "onpolicy.save_every=1", "onpolicy.val_every=1",
    "vis.steps=2", "vis.save_every=1", "vis.val_every=1",
    "stats.clips=8",
]  # fmt: skip
# A VAE stage long enough to be interrupted in the middle: a checkpoint only at the end,
# so that the one a signal leaves is the signal's.
SIGNALLED = ["vae.steps=12", "vae.log_every=1", "vae.save_every=0", "vae.val_every=4"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (TEST_DELAY_ENV, TIMEOUT_ENV)}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def _args(stage: str, runs: Path, sets: list[str], procs: int, *extra: str) -> list[str]:
    args = [sys.executable, str(MAIN), stage, "--recipe", "ci", "--runs-dir", str(runs)]
    args += ["--device", "cpu", "--no-progress", "--procs", str(procs), *extra]
    for item in sets:
        args += ["--set", item]
    return args


def _run(args: list[str], env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


def _ok(result: subprocess.CompletedProcess) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def _log(stage_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (stage_dir / "metrics.jsonl").read_text().splitlines()]


def _losses(stage_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in _log(stage_dir) if "split" not in r]


def _validations(stage_dir: Path) -> list[dict]:
    return [r for r in _log(stage_dir) if r.get("split") == "val"]


def _weights(stage_dir: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(str(stage_dir / "final" / name))


def _assert_same_training(a: Path, b: Path) -> None:
    """Exact equality: the loss of every step, every validation, the final weights."""
    assert _losses(a) == _losses(b)
    assert _validations(a) == _validations(b)
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# ----------------------------------------------------------------------------- slow ranks


@pytest.mark.parametrize("slow_rank", [1, pytest.param(0, marks=pytest.mark.slow)])
def test_a_slow_rank_at_every_stage_boundary_finishes_every_stage(tmp_path, slow_rank):
    """Rank ``slow_rank`` arrives 2 s late at every boundary: resume, save, validate,
    preview and finish, in every stage of ``all``. Rank 1 late at ``finish`` is the race
    that hung two processes forever: rank 1 listed the checkpoint folder after rank 0 had
    written the final checkpoint, skipped the save and its barrier, and the two ranks went
    on with different collectives."""
    points = ("resume", "save", "validate", "preview", "finish")
    delays = ",".join(f"{slow_rank}:{point}:2" for point in points)
    env = _env(**{TEST_DELAY_ENV: delays, TIMEOUT_ENV: "300"})
    runs = tmp_path / "runs"
    # a first run stopped after step 2, so that the second one resumes
    _ok(_run(_args("vae", runs, BOUNDARIES, 2, "--stop-after", "2"), env))
    assert [p.name for p in list_checkpoints(runs / "ci" / "vae")] == ["step-00000002"]
    output = _ok(_run(_args("all", runs, BOUNDARIES, 2), env))
    assert "resuming from" in output
    run = runs / "ci"
    for stage in ("vae", "stats", "cache", "flow", "onpolicy", "vis"):
        assert (run / stage / "DONE.json").is_file(), stage
    assert [r["step"] for r in _validations(run / "vae")] == [2, 4]
    previews = sorted(p.name for p in (run / "flow" / "previews").iterdir())
    assert previews == ["step-00000002.mp4", "step-00000004.mp4"]
    assert (run / "eval" / "metrics.json").is_file()
    # DDP has nothing to search for: no warning about find_unused_parameters
    assert DDP_WARNING not in output


STRESS_WORKER = textwrap.dedent(
    """
    import json
    import os
    import random
    import sys
    from pathlib import Path

    from trajloom_train.config import apply_overrides
    from trajloom_train.distributed import TEST_DELAY_ENV, init_distributed, shutdown
    from trajloom_train.recipes import ci
    from trajloom_train.stages import RunContext, run_stage

    POINTS = ("resume", "save", "validate", "finish", "step")
    SETTINGS = ["vae.steps=4", "vae.save_every=1", "vae.val_every=2", "vae.log_every=1"]


    def main(root, runs):
        dist = init_distributed("cpu")
        recipe = apply_overrides(ci(), SETTINGS)
        draws = random.Random(0)  # the same draws on both ranks
        finished = 0
        for i in range(runs):
            slow = draws.randrange(2)
            delays = [draws.choice((0, 0.01, 0.05, 0.2, 0.5)) for _ in POINTS]
            os.environ[TEST_DELAY_ENV] = ",".join(
                f"{slow}:{p}:{d}" for p, d in zip(POINTS, delays) if p != "step" or d < 0.1
            )
            run = Path(root) / f"run-{i:02d}"
            stop = draws.choice((None, 1, 2, 3))
            if stop is not None:  # interrupted and resumed: the resume boundary too
                ctx = RunContext(recipe, run, dist, stop_after=stop, progress=False)
                assert run_stage(ctx, "vae")["finished"] is False
            summary = run_stage(RunContext(recipe, run, dist, progress=False), "vae")
            assert summary["finished"] and summary["step"] == 4, summary
            finished += 1
            if dist.is_main:
                Path(root, "stress.json").write_text(json.dumps({"finished": finished}))
        shutdown()


    main(sys.argv[1], int(sys.argv[2]))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_stage_boundary_race_50_runs_in_a_row(tmp_path):
    """The VAE stage 50 times over in one two-process job, a random rank late by a random
    0-0.5 s at each boundary (resume, save, validate, finish, steps), half the stages
    interrupted and resumed: all 50 finish, none hangs (timeout 120 s per collective)."""
    script = tmp_path / "stress.py"
    script.write_text(STRESS_WORKER)
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    args += ["--master_port", str(_free_port()), str(script), str(tmp_path), "50"]
    result = _run(args, _env(**{TIMEOUT_ENV: "120"}), timeout=3000)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert json.loads((tmp_path / "stress.json").read_text()) == {"finished": 50}
    for i in range(50):
        assert (tmp_path / f"run-{i:02d}" / "vae" / "DONE.json").is_file()


# ----------------------------------------------------------------------------- stuck rank


def test_a_stuck_rank_ends_the_run_with_one_line_within_the_timeout(tmp_path):
    """Rank 1 never reaches the barrier after the step-2 checkpoint. Rank 0 waits the
    collective timeout (8 s here), then ends the run with one line naming stage, step and
    rank; the launcher ends the stuck rank (SIGTERM, SIGKILL after its 30 s grace)."""
    env = _env(**{TEST_DELAY_ENV: "1:save:3600", TIMEOUT_ENV: "8"})
    runs = tmp_path / "runs"
    sets = ["vae.steps=4", "vae.save_every=2", "vae.val_every=0", "vae.log_every=1"]
    started = time.monotonic()
    proc = subprocess.Popen(
        _args("vae", runs, sets, 2),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    # the moment rank 0 reaches the barrier: its checkpoint is there (written before it)
    log = runs / "ci" / "vae" / "metrics.jsonl"
    while not (log.is_file() and any(r["step"] == 2 for r in _log(log.parent))):
        assert proc.poll() is None and time.monotonic() - started < 600, proc.communicate()
        time.sleep(0.1)
    waiting_since = time.monotonic()
    stdout, stderr = proc.communicate(timeout=600)
    ended = time.monotonic() - waiting_since
    assert proc.returncode == 3, stdout + stderr
    errors = [line for line in stderr.splitlines() if line.strip()]
    assert len(errors) == 1, stderr
    assert errors[0].startswith("error: rank 0 of 2 waited 8 s for the other processes"), errors
    assert "stage 'vae' at step 2" in errors[0] and "--collective-timeout" in errors[0]
    # 8 s of waiting, the launcher's 30 s grace for the stuck rank, and a loaded machine
    assert ended < 8 + 30 + 60, ended
    assert not (runs / "ci" / "vae" / "DONE.json").exists()
    assert [p.name for p in list_checkpoints(runs / "ci" / "vae")] == ["step-00000002"]


# ----------------------------------------------------------------------------- signals


def _wait_for_steps(proc: subprocess.Popen, stage_dir: Path, steps: int) -> None:
    started = time.monotonic()
    log = stage_dir / "metrics.jsonl"
    while not (log.is_file() and len(_losses(stage_dir)) >= steps):
        if proc.poll() is not None:
            raise AssertionError(f"ended before step {steps}: {proc.communicate()}")
        assert time.monotonic() - started < 600
        time.sleep(0.05)


def _rank_pid(launcher: int, rank: int) -> int:
    """The process of ``rank`` among the launcher's children (its ``RANK`` variable)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == launcher and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    raise AssertionError(f"no child of {launcher} with RANK={rank}")


def _interrupted(runs: Path, procs: int, signum: int, target: str) -> tuple[str, int]:
    """Run the VAE stage slowed to ~0.3 s a step, send ``signum`` to ``target`` (the
    command, or "rank1") after step 3; return its stderr and the step it stopped at."""
    env = _env(**{TEST_DELAY_ENV: "*:step:0.3"})
    proc = subprocess.Popen(
        _args("vae", runs, SIGNALLED, procs),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    stage_dir = runs / "ci" / "vae"
    try:
        _wait_for_steps(proc, stage_dir, 3)
        pid = proc.pid if target == "command" else _rank_pid(proc.pid, 1)
        os.kill(pid, signum)
        _stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signum, stderr
    name = signal.Signals(signum).name
    lines = [line for line in stderr.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith(f"interrupted by {name}: stage 'vae' stopped at step "), lines
    step = int(lines[0].split("stopped at step ")[1].split()[0])
    assert 3 <= step < 12
    # the one checkpoint is the signal's (the stage saves every 0 steps: only at its end)
    kept = list_checkpoints(stage_dir)
    assert [p.name for p in kept] == [f"step-{step:08d}"] and str(kept[0]) in lines[0]
    assert not (stage_dir / "DONE.json").exists()
    assert _losses(stage_dir)[-1][0] == step
    return stderr, step


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Callable[[int], Path]:
    """``uninterrupted(procs)``: the VAE stage of :data:`SIGNALLED` run through without a
    signal on ``procs`` processes (made once per module)."""
    root = tmp_path_factory.mktemp("uninterrupted")
    done: dict[int, Path] = {}

    def get(procs: int) -> Path:
        if procs not in done:
            _ok(_run(_args("vae", root / str(procs), SIGNALLED, procs), _env()))
            done[procs] = root / str(procs) / "ci" / "vae"
        return done[procs]

    return get


def test_sigterm_to_the_launcher_stops_both_ranks_at_one_step_and_resumes_exactly(
    uninterrupted, tmp_path
):
    """What a cluster does before it kills a job: SIGTERM to the command. Both processes
    stop after the same step, save it and exit 143; the resumed run equals the
    uninterrupted one exactly (every loss and validation, the final weights)."""
    runs = tmp_path / "runs"
    _interrupted(runs, 2, signal.SIGTERM, "command")
    output = _ok(_run(_args("vae", runs, SIGNALLED, 2), _env()))
    assert DDP_WARNING not in output
    _assert_same_training(runs / "ci" / "vae", uninterrupted(2))


@pytest.mark.slow
def test_sigterm_saves_at_the_next_step_and_resumes_exactly_one_process(uninterrupted, tmp_path):
    runs = tmp_path / "runs"
    _interrupted(runs, 1, signal.SIGTERM, "command")
    _ok(_run(_args("vae", runs, SIGNALLED, 1), _env()))
    _assert_same_training(runs / "ci" / "vae", uninterrupted(1))


@pytest.mark.slow
def test_sigint_to_one_rank_stops_both_at_the_same_step(uninterrupted, tmp_path):
    """Only rank 1 gets the signal: the step's all-reduce tells rank 0, both save once."""
    runs = tmp_path / "runs"
    _interrupted(runs, 2, signal.SIGINT, "rank1")
    _ok(_run(_args("vae", runs, SIGNALLED, 2), _env()))
    _assert_same_training(runs / "ci" / "vae", uninterrupted(2))


@pytest.mark.slow
def test_a_rank_killed_without_a_word_is_named_by_the_launcher(tmp_path):
    """SIGKILL to rank 1 (what the out-of-memory killer sends): it cannot say anything, so
    the launcher does, and the command exits 128 + 9."""
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        _args("vae", runs, SIGNALLED, 2),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(**{TEST_DELAY_ENV: "*:step:0.3"}),
    )
    try:
        _wait_for_steps(proc, runs / "ci" / "vae", 3)
        os.kill(_rank_pid(proc.pid, 1), signal.SIGKILL)
        _stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 137, stderr
    assert "error: the training process of rank 1 was killed by SIGKILL" in stderr.splitlines()
    assert "Traceback" not in stderr
    assert len([x for x in stderr.splitlines() if x.startswith("error:")]) <= 2, stderr


# ----------------------------------------------------------------------------- options


def test_a_steps_scale_that_is_not_a_finite_positive_number_is_refused_up_front(tmp_path):
    message = "--steps-scale must be a finite number > 0, got {}"
    for value in ("nan", "-1", "0", "-inf"):
        with pytest.raises(ValueError, match=message.format(float(value))):
            scale_steps(ci(), float(value))
        with pytest.raises(StudyError, match=message.format(float(value))):
            Study(out=tmp_path / "study", steps_scale=float(value))
    runs = tmp_path / "runs"
    result = _run(_args("vae", runs, [], 1, "--steps-scale", "inf"), _env(), timeout=300)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: " + message.format("inf")]
    assert not runs.exists()
    out = tmp_path / "study"
    args = [sys.executable, str(BENCH), "ablate", "--out", str(out), "--steps-scale", "inf"]
    result = _run(args, _env(), timeout=300)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: " + message.format("inf")]
    assert not out.exists()


def test_a_collective_timeout_that_is_not_a_positive_number_is_refused_up_front(tmp_path):
    for value in ("0", "-5", "nan", "inf", "soon"):
        with pytest.raises(ValueError, match="--collective-timeout"):
            collective_timeout(value)
    runs = tmp_path / "runs"
    result = _run(_args("vae", runs, [], 2, "--collective-timeout", "inf"), _env(), 300)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: --collective-timeout 'inf': give a finite number of seconds > 0"]
    assert not runs.exists()
