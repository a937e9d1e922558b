"""The training loop every stage shares.

A stage is a :class:`Task`: a module, a deterministic batch maker and a loss. The loop
adds what every stage needs: AdamW with warmup and a schedule, gradient accumulation,
data parallelism, bf16 autocast on CUDA, gradient clipping, EMA weights, checkpoints
(atomic, keep last k, exact resume), a progress bar, a JSONL log, TensorBoard when it is
installed, periodic validation and previews, and the export of the final weights.

Determinism: the batch of step ``s`` holds the global sample indices
``s * B ... (s + 1) * B - 1`` and every random draw of a sample comes from a generator
seeded by (seed, stage, sample index), so the losses of a resumed run equal those of an
uninterrupted one, and N processes compute the update one process would.

The loss of a step is ``Σ numerators / Σ denominators`` over every micro-batch of every
process (the denominators are known before the forward passes: sample counts, or summed
token weights for the visibility-weighted flow loss), so accumulation and data
parallelism give exactly the global-batch loss.

Data parallelism is torch's ``DistributedDataParallel`` around a :class:`TaskModule`, whose
forward is the stage's whole loss (see there); one process uses the plain module.

Every process makes the same collectives in the same order: what gates one (saving,
validating, previewing, logging, finishing, resuming) follows from the step counter and the
recipe, which every process shares, or is decided by rank 0 and sent to the others
(which checkpoint to resume from, whether a validation was lost) — never from each
process's own look at the run folder, which rank 0 changes while the others read it.
SIGTERM and SIGINT stop a stage at the next step boundary, agreed by every process
through the step's all-reduce, after saving a checkpoint (``trajloom_train.interrupt``).
"""

from __future__ import annotations

import inspect
import json
import math
import signal
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from trajloom_train.checkpoint import (
    atomic_write_text,
    restore_checkpoint,
    restore_state,
    save_state,
)
from trajloom_train.config import OptimConfig, StageConfig
from trajloom_train.distributed import (
    Dist,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    from_main,
    injected_delay,
    set_place,
    waiting,
)
from trajloom_train.interrupt import Interrupted, StopSignals
from trajloom_train.launch import under_launcher
from trajloom_train.state import EMA, TrainState

__all__ = [
    "EMA",
    "DivergedError",
    "LossOut",
    "MetricsLog",
    "StepResult",
    "Task",
    "TaskModule",
    "TrainState",
    "data_parallel",
    "lr_at",
    "run_task",
    "stage_done",
    "train_step",
]

DONE_NAME = "DONE.json"


@dataclass
class LossOut:
    """One micro-batch's loss: ``numerator`` (scalar, differentiable) over its denominator."""

    numerator: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)  # means over the micro-batch
    # A term already normalized as this micro-batch's share of a global mean (summed over
    # micro-batches and processes, not divided by the denominator).
    extra: torch.Tensor | None = None


@dataclass
class Task:
    """A stage for :func:`run_task`.

    make_batch(step, micro, indices) -> batch: deterministic in its arguments.
    loss(model, batch, step, indices) -> LossOut.
    denominator(batch) -> float tensor scalar; default: the number of samples.
    validate(module) -> metrics; preview(module, step) -> None; both get the EMA weights
    when the stage keeps them. export(module, folder) writes the final weights.
    data_report() -> counters of the data read (e.g. skipped shard samples by reason),
    summed over processes into ``DONE.json`` and the log at the end.
    """

    name: str
    model: nn.Module
    config: StageConfig
    make_batch: Callable[[int, int, list[int]], Any]
    loss: Callable[[nn.Module, Any, int, list[int]], LossOut]
    export: Callable[[nn.Module, Path], None]
    denominator: Callable[[Any], torch.Tensor] | None = None
    validate: Callable[[nn.Module], dict[str, float]] | None = None
    preview: Callable[[nn.Module, int], None] | None = None
    info: dict[str, Any] = field(default_factory=dict)  # written into DONE.json
    data_report: Callable[[], dict[str, Any]] | None = None
    # True when which parameters the loss reaches depends on the batch (a parameter only
    # some micro-batches use): DDP then searches the autograd graph for unused ones every
    # step (find_unused_parameters). The stages reach every trainable parameter in every
    # step (tests/apps/test_train_ddp_unused.py checks it), so they leave it False: no
    # search, and no DDP warning that the search found nothing.
    data_dependent_parameters: bool = False


class TaskModule(nn.Module):
    """A stage's model with the stage's loss as its forward: the unit DDP wraps.

    ``forward(batch, step, indices)`` is ``task.loss(model, batch, step, indices)``. DDP
    expects one forward per backward; the on-policy loss evaluates the model several times
    in one loss, and as the forward of this module all of them are one DDP forward. DDP's
    gradient hooks sit on each parameter's gradient accumulator, which autograd runs once
    per backward however often the parameter was used, so each gradient is all-reduced
    once, in buckets, while the rest of the backward pass is still running.
    """

    def __init__(self, model: nn.Module, loss: Callable[[nn.Module, Any, int, list[int]], LossOut]):
        super().__init__()
        self.model = model
        self._loss = loss  # a plain function: not a submodule, holds no parameters

    def forward(self, batch: Any, step: int, indices: list[int]) -> LossOut:
        return self._loss(self.model, batch, step, indices)


# The buffers of these models are constants built from their configs (anchor grids,
# sinusoidal tables), equal on every process: DDP need not broadcast them before every
# forward. Recent torch spells this forward_sync_buffers=False (buffers still synced at
# construction); older releases broadcast_buffers=False (not synced at all, also fine here).
_NO_FORWARD_BUFFER_SYNC: dict[str, Any] = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    else {"broadcast_buffers": False}
)


def data_parallel(task: Task, dist: Dist) -> nn.Module:
    """The module :func:`train_step` calls: the task's :class:`TaskModule`, in DDP when distributed.

    One process gets the bare module (no wrapper, no hooks, no collectives). DDP's
    constructor broadcasts rank 0's parameters, so every process starts from
    the same weights (a resumed run loads the same checkpoint everywhere anyway).
    """
    module = TaskModule(task.model, task.loss)
    if not dist.distributed:
        return module
    with waiting("DDP's broadcast of rank 0's initial weights"):
        return DistributedDataParallel(
            module,
            # A single-device module whose batches make_batch already put on its device: no
            # device_ids, so DDP does not copy (or walk) the batch.
            device_ids=None,
            **_NO_FORWARD_BUFFER_SYNC,
            # A task whose loss reaches some parameters only for some batches says so: DDP
            # then walks the autograd graph from the loss once per step and leaves the
            # gradient of a parameter no process used as None, like one process (without
            # the flag it would wait for gradients that never come and fail the next
            # step). Every stage of apps/train reaches every trainable parameter in every
            # step, so none needs the walk (nor DDP's warning that it found nothing).
            find_unused_parameters=task.data_dependent_parameters,
        )


def _syncing(module: nn.Module, last: bool) -> AbstractContextManager:
    """DDP all-reduces only in the backward of a step's last micro-batch; before, it accumulates."""
    if isinstance(module, DistributedDataParallel) and not last:
        return module.no_sync()
    return nullcontext()


def lr_at(step: int, optim: OptimConfig, total_steps: int) -> float:
    """Learning rate of ``step`` (0-based): linear warmup, then constant or cosine to min_lr."""
    if optim.warmup_steps and step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return optim.lr
    span = max(1, total_steps - optim.warmup_steps)
    progress = min(1.0, (step - optim.warmup_steps) / span)
    return optim.min_lr + 0.5 * (optim.lr - optim.min_lr) * (1 + math.cos(math.pi * progress))


class MetricsLog:
    """``metrics.jsonl`` (one JSON object per line) and TensorBoard scalars when available."""

    def __init__(self, path: Path, tb_dir: Path | None, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        self.writer: Any = None
        if enabled and tb_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                pass
            else:
                self.writer = SummaryWriter(str(tb_dir))

    def records(self) -> list[dict[str, Any]]:
        """The log's records; a line that is not JSON (torn by a crash) is dropped with a warning."""
        if not self.path.is_file():
            return []
        out = []
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                warnings.warn(
                    f"{self.path}:{number}: unreadable log line dropped (torn by a crash?)",
                    stacklevel=2,
                )
        return out

    def has(self, split: str, step: int) -> bool:
        """Whether the log holds a ``split`` record (e.g. "val") of ``step``."""
        return any(r.get("split") == split and r.get("step") == step for r in self.records())

    def truncate_after(self, step: int) -> list[dict[str, Any]]:
        """Drop records past ``step`` (written after the checkpoint a resume starts from).

        Returns the records kept.
        """
        if not self.enabled:
            return []
        kept = [r for r in self.records() if r.get("step", 0) <= step]
        if self.path.is_file():
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        return kept

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            prefix = record.get("split", "train")
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.writer.add_scalar(f"{prefix}/{key}", value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def stage_done(stage_dir: Path) -> bool:
    return (stage_dir / DONE_NAME).is_file()


def _autocast(device: torch.device, precision: str) -> AbstractContextManager:
    if device.type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def _indices(step: int, micro: int, cfg: StageConfig, dist: Dist) -> list[int]:
    """Global sample indices of (step, micro-batch) on this process."""
    size = cfg.micro_batch(dist.world_size)
    base = step * cfg.batch_size + micro * size * dist.world_size
    start = base + dist.rank * size
    return list(range(start, start + size))


class DivergedError(RuntimeError):
    """A training step produced a non-finite loss or gradient; the message names stage and step."""


@dataclass
class StepResult:
    """What one optimizer step reports: the global-batch loss and the micro-batch logs."""

    loss: float
    lr: float
    grad_norm: float
    logs: dict[str, float]  # means over this process's micro-batches
    # A stop signal reached some process before this step's all-reduce: the signal every
    # process stops with (SIGINT if any process got one first, else SIGTERM), else None.
    stop: int | None = None


def train_step(
    task: Task,
    state: TrainState,
    dist: Dist,
    precision: str,
    module: nn.Module,
    stop: Callable[[], int | None] | None = None,
) -> StepResult:
    """One optimizer step of ``task`` on the global batch of ``state.step``; advances it.

    ``module`` is :func:`data_parallel`'s for this task. Every micro-batch's loss is scaled
    by ``world_size / Σ denominators`` (summed over the micro-batches of every process) so
    that the gradients DDP averages over processes are those of the global-batch loss.
    ``stop()``: this process's pending stop signal (or None); it travels in the step's
    all-reduce, so every process gets the same :attr:`StepResult.stop`.
    """
    cfg = task.config
    lr = lr_at(state.step, cfg.optim, cfg.steps)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    accum = cfg.accumulation(dist.world_size)
    micro_batches = []
    for micro in range(accum):
        idx = _indices(state.step, micro, cfg, dist)
        micro_batches.append((idx, task.make_batch(state.step, micro, idx)))
    dens = [
        task.denominator(b) if task.denominator is not None else torch.tensor(float(len(i)))
        for i, b in micro_batches
    ]
    global_den = all_reduce_sum(
        torch.stack(dens).sum().to(dist.device, torch.float64), "the step's loss denominator"
    )
    scale = dist.world_size / float(global_den.clamp_min(1e-12))
    # numerators, extras, processes asked to stop by SIGTERM, by SIGINT
    sums = torch.zeros(4, device=dist.device, dtype=torch.float64)
    logs: dict[str, float] = {}
    for i, (idx, batch) in enumerate(micro_batches):
        last = i == accum - 1
        with _syncing(module, last=last):
            with _autocast(dist.device, precision):
                out = module(batch, state.step, idx)
            total = out.numerator.float() * scale
            sums[0] += out.numerator.detach().double()
            if out.extra is not None:
                total = total + out.extra.float() * dist.world_size
                sums[1] += out.extra.detach().double()
            # DDP all-reduces the gradients during the last backward (on a GPU the norm
            # below is where the process waits for it)
            with waiting("the step's gradient all-reduce") if last else nullcontext():
                total.backward()
        for k, v in out.logs.items():
            logs[k] = logs.get(k, 0.0) + float(v) / accum
    with waiting("the step's gradient all-reduce"):
        grad_norm = _grad_norm(state.params, cfg.optim.clip_grad_norm)
    signum = stop() if stop is not None else None
    if signum is not None:
        sums[3 if signum == signal.SIGINT else 2] = 1.0
    sums = all_reduce_sum(sums, "the step's loss and stop requests")
    stopping = signal.SIGINT if sums[3] > 0 else signal.SIGTERM if sums[2] > 0 else None
    loss = float(sums[0] / global_den + sums[1])
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        state.optimizer.zero_grad(set_to_none=True)
        raise DivergedError(
            f"stage '{task.name}' diverged at step {state.step + 1}: loss {loss}, gradient "
            f"norm {grad_norm}; the weights were not updated and the last checkpoint is kept. "
            f"Lower the learning rate (--set {task.name}.optim.lr=...) or check the data, "
            "then rerun to resume"
        )
    state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)
    if state.ema is not None:
        state.ema.update(state.model, state.step)
    state.step += 1
    return StepResult(loss, lr, grad_norm, logs, stop=stopping)


def _grad_norm(params: list[nn.Parameter], clip: float) -> float:
    """The norm of the averaged gradients (identical on every process), clipped to ``clip``
    when > 0; clipping at infinity only measures it."""
    limit = clip if clip > 0 else math.inf
    return float(torch.nn.utils.clip_grad_norm_(params, limit))


class _Run:
    """The hooks of one :func:`run_task` call: log, save, validate, preview, finish.

    Each hook makes the same collectives on every process, and whether a hook runs follows
    from the step counter (or from rank 0's word): ``saved_step`` is the step of the
    checkpoint this call saved or resumed from, known to every process alike.
    """

    def __init__(
        self,
        task: Task,
        state: TrainState,
        stage_dir: Path,
        dist: Dist,
        precision: str,
        log: MetricsLog,
        bar: tqdm,
        saved_step: int | None,
    ) -> None:
        self.task, self.state, self.stage_dir, self.dist = task, state, stage_dir, dist
        self.precision, self.log, self.bar = precision, log, bar
        self.window_start, self.window_samples = time.perf_counter(), 0
        self.saved_step = saved_step

    def on_step(self, result: StepResult) -> None:
        cfg, done = self.task.config, self.state.step
        set_place(self.task.name, done)
        self.window_samples += cfg.batch_size
        self.bar.update(1)
        if done % cfg.log_every == 0 or done == cfg.steps:
            self.log_step(result)
        if cfg.save_every and done % cfg.save_every == 0 and done < cfg.steps:
            self.save()
        if self.validation_due(done):
            self.validate()
        if self.task.preview is not None and cfg.preview_every and done % cfg.preview_every == 0:
            self.preview()

    def validation_due(self, step: int) -> bool:
        cfg = self.task.config
        return bool(cfg.val_every) and step % cfg.val_every == 0 and step < cfg.steps

    def log_step(self, result: StepResult) -> None:
        now = time.perf_counter()
        rate = self.window_samples / max(now - self.window_start, 1e-9)
        self.window_start, self.window_samples = now, 0
        logs = result.logs
        if self.dist.distributed:
            packed = torch.tensor(list(logs.values()), device=self.dist.device, dtype=torch.float64)
            packed = all_reduce_sum(packed, "the mean of the step's logs") / self.dist.world_size
            logs = dict(zip(logs, packed.tolist(), strict=True))
        self.log.write(
            {
                "stage": self.task.name,
                "step": self.state.step,
                "loss": result.loss,
                "lr": result.lr,
                "grad_norm": result.grad_norm,
                "samples_per_s": rate,
                **logs,
            }
        )
        self.bar.set_postfix(loss=f"{result.loss:.4g}", samples_s=f"{rate:.1f}", refresh=False)

    def save(self) -> None:
        injected_delay("save", self.dist.rank)
        if self.dist.is_main:
            save_state(self.stage_dir, self.state, keep_last=self.task.config.keep_last)
        barrier("the barrier after rank 0 saved the checkpoint")
        self.saved_step = self.state.step

    def checkpoint_path(self) -> Path | None:
        if self.saved_step is None:
            return None
        return self.stage_dir / "checkpoints" / f"step-{self.saved_step:08d}"

    def validate(self) -> dict[str, float]:
        injected_delay("validate", self.dist.rank)
        metrics: dict[str, float] = {}
        if self.task.validate is not None and self.dist.is_main:
            with torch.no_grad(), _autocast(self.dist.device, self.precision):
                metrics = self.task.validate(self.state.eval_module())
            step = self.state.step
            self.log.write({"stage": self.task.name, "split": "val", "step": step, **metrics})
            shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            tqdm.write(f"[{self.task.name}] step {step} val {shown}")
            self.state.model.train()
        barrier("the barrier after rank 0's validation")
        return metrics

    def preview(self) -> None:
        injected_delay("preview", self.dist.rank)
        if self.dist.is_main:
            assert self.task.preview is not None
            self.task.preview(self.state.eval_module(), self.state.step)
            self.state.model.train()
        barrier("the barrier after rank 0's preview")

    def finish(self, loss: float, wall0: float, cpu0: float) -> dict[str, Any]:
        """Final checkpoint, validation, export and ``DONE.json``; returns the summary."""
        task, steps = self.task, self.task.config.steps
        set_place(task.name, steps)
        injected_delay("finish", self.dist.rank)
        # The final checkpoint, unless this call resumed from it (a process that died
        # between it and DONE.json): known from the shared step counter, never from a
        # look at the checkpoint folder that rank 0 may be writing at that moment.
        if self.saved_step != steps:
            self.save()
        metrics = self.validate()
        data = _sum_counts(task.data_report(), self.dist) if task.data_report else {}
        if data:
            self.log.write({"stage": task.name, "split": "data", "step": steps, **data})
            if self.dist.is_main:
                tqdm.write(f"[{task.name}] data: {_describe_counts(data)}")
        summary = {
            "stage": task.name,
            "step": steps,
            "finished": True,
            "final_loss": loss,
            "val": metrics,
            **({"data": data} if data else {}),
            # of this call (a resumed stage counts only its last part)
            "wall_s": time.perf_counter() - wall0,
            "cpu_s": time.process_time() - cpu0,
            **task.info,
        }
        if self.dist.is_main:
            task.export(self.state.eval_module(), self.stage_dir / "final")
            text = json.dumps(summary, indent=2) + "\n"
            atomic_write_text(self.stage_dir / DONE_NAME, text)
        barrier("the barrier after rank 0 exported the stage")
        return summary


def _sum_counts(counts: dict[str, Any], dist: Dist) -> dict[str, Any]:
    """Counters (ints, and dicts of ints) summed over every process."""
    if not dist.distributed:
        return counts
    gathered = all_gather_objects(counts, "gathering the data counters of every process")

    def add(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        out = dict(a)
        for key, value in b.items():
            if isinstance(value, dict):
                out[key] = add(out.get(key, {}), value)
            elif isinstance(value, (int, float)):
                out[key] = out.get(key, 0) + value
        return out

    total: dict[str, Any] = {}
    for part in gathered:
        total = add(total, part)
    return total


def _describe_counts(data: dict[str, Any]) -> str:
    skipped = data.get("skipped") or {}
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items()))
    return (
        f"{data.get('samples_read', 0)} samples read, {data.get('windows_yielded', 0)} "
        f"windows used, {data.get('samples_skipped', 0)} bad samples skipped"
        + (f" ({reasons})" if reasons else "")
    )


@dataclass(frozen=True)
class _Resumed:
    """Rank 0's word on where a stage resumes: the checkpoint and whether its validation
    was lost (due at that step but not in the log). Sent to every process."""

    path: str | None = None
    step: int = 0
    validate: bool = False
    error: str | None = None


def _resume(
    task: Task, stage_dir: Path, dist: Dist, log: MetricsLog
) -> tuple[TrainState, _Resumed]:
    """A fresh state, or the stage's newest checkpoint with the log cut back to it.

    Rank 0 chooses the checkpoint (skipping damaged ones) and sends its choice; every
    process loads that one, so all start at the same step.
    """
    state = TrainState.create(task.model, task.config)
    injected_delay("resume", dist.rank)
    choice = _Resumed()
    if dist.is_main:
        try:
            last = restore_state(state, stage_dir, device=dist.device)
        except ValueError as err:
            choice = _Resumed(error=str(err))
        else:
            if last is not None:
                cfg = task.config
                due = bool(cfg.val_every) and state.step % cfg.val_every == 0
                due = due and 0 < state.step < cfg.steps
                lost = due and not log.has("val", state.step)
                choice = _Resumed(str(last), state.step, lost)
    choice = from_main(choice, "rank 0's choice of the checkpoint to resume from")
    if choice.error is not None:
        raise ValueError(choice.error)
    if choice.path is None:
        return state, choice
    if not dist.is_main:
        restore_checkpoint(state, choice.path, device=dist.device)
        if state.step != choice.step:
            raise ValueError(f"{choice.path}: step {state.step}, rank 0 read {choice.step}")
    log.truncate_after(state.step)
    if dist.is_main:
        tqdm.write(f"[{task.name}] resuming from {choice.path} (step {state.step})")
    return state, choice


def _agreed_signal(signum: int | None, dist: Dist) -> int | None:
    """The stop signal every process agrees on: SIGINT if any process got one first, else
    SIGTERM if any got that, else None (one all-reduce; identity in one process)."""
    flags = torch.zeros(2, device=dist.device, dtype=torch.float64)
    if signum is not None:
        flags[1 if signum == signal.SIGINT else 0] = 1.0
    flags = all_reduce_sum(flags, "the stop requests at the end of the stage")
    return signal.SIGINT if flags[1] > 0 else signal.SIGTERM if flags[0] > 0 else None


def run_task(
    task: Task,
    stage_dir: Path,
    dist: Dist,
    *,
    precision: str = "bf16",
    tb_dir: Path | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``task`` in ``stage_dir``, resuming from its latest checkpoint.

    ``stop_after`` ends the process's work after that many steps of this call (a
    controlled interruption, for tests); the stage is then not marked done.
    Returns the summary written to ``DONE.json`` (or the progress so far).

    SIGTERM or SIGINT while the stage trains: every process stops after the same step,
    the progress is saved, and :class:`~trajloom_train.interrupt.Interrupted` is raised
    (after the stage finished, when the signal came during its last step or its finish).
    """
    cfg = task.config
    log = MetricsLog(stage_dir / "metrics.jsonl", tb_dir, enabled=dist.is_main)
    set_place(task.name)
    try:
        state, resumed = _resume(task, stage_dir, dist, log)
        module = data_parallel(task, dist)  # after the restore: DDP starts from rank 0's weights
        start = state.step
        set_place(task.name, start)
        bar = tqdm(
            total=cfg.steps,
            initial=start,
            desc=task.name,
            disable=not (dist.is_main and progress),
            dynamic_ncols=True,
            mininterval=1.0,
        )
        run = _Run(
            task, state, stage_dir, dist, precision, log, bar, start if resumed.path else None
        )
        with StopSignals(escalate=not under_launcher()) as signals:
            try:
                if resumed.validate:
                    run.validate()  # the process died between the checkpoint and its validation
                state.model.train()
                wall0, cpu0 = time.perf_counter(), time.process_time()
                end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
                loss = float("nan")
                while state.step < end:
                    result = train_step(task, state, dist, precision, module, signals.pending)
                    injected_delay("step", dist.rank)
                    loss = result.loss
                    run.on_step(result)
                    if result.stop is not None and state.step < cfg.steps:
                        if run.saved_step != state.step:
                            run.save()
                        raise Interrupted(
                            result.stop, task.name, state.step, cfg.steps, run.checkpoint_path()
                        )
            finally:
                bar.close()
            if end < cfg.steps:  # interrupted on purpose: keep the progress, do not finish
                if end > start and run.saved_step != state.step:
                    run.save()
                return {"stage": task.name, "step": end, "finished": False}
            summary = run.finish(loss, wall0, cpu0)
            # a signal during the last step or the finish: the stage is done, stop after it
            stop = _agreed_signal(signals.requested, dist)
        if stop is not None:
            raise Interrupted(stop, task.name, cfg.steps, cfg.steps, None, finished=True)
        return summary
    finally:
        log.close()
