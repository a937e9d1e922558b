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
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from trajloom_train.checkpoint import (
    atomic_write_text,
    capture_rng,
    checkpoint_step,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from trajloom_train.config import OptimConfig, StageConfig
from trajloom_train.distributed import (
    Dist,
    all_reduce_sum,
    average_gradients,
    barrier,
    broadcast_parameters,
)

__all__ = ["EMA", "LossOut", "MetricsLog", "Task", "lr_at", "run_task", "stage_done"]

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


def lr_at(step: int, optim: OptimConfig, total_steps: int) -> float:
    """Learning rate of ``step`` (0-based): linear warmup, then constant or cosine to min_lr."""
    if optim.warmup_steps and step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return optim.lr
    span = max(1, total_steps - optim.warmup_steps)
    progress = min(1.0, (step - optim.warmup_steps) / span)
    return optim.min_lr + 0.5 * (optim.lr - optim.min_lr) * (1 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of the trainable parameters (float32 shadow copies).

    The decay warms up as ``min(decay, (1 + step) / (10 + step))`` so that early weights
    do not dominate short runs.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {
            name: p.detach().float().clone()
            for name, p in model.named_parameters()
            if p.requires_grad
        }

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for name, p in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].mul_(d).add_(p.detach().float(), alpha=1 - d)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) ^ set(state)
        if missing:
            raise ValueError(f"EMA state does not match the model: {sorted(missing)[:5]}")
        for name, value in state.items():
            self.shadow[name].copy_(value)

    def module(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` holding the EMA weights."""
        clone = copy.deepcopy(model)
        with torch.no_grad():
            for name, p in clone.named_parameters():
                if name in self.shadow:
                    p.copy_(self.shadow[name].to(p.dtype))
        return clone


class MetricsLog:
    """``metrics.jsonl`` (one JSON object per line) and TensorBoard scalars when available."""

    def __init__(self, path: Path, tb_dir: Path | None, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        self.writer = None
        if enabled and tb_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self.writer = SummaryWriter(str(tb_dir))

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (written after the checkpoint a resume starts from)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = [
            line
            for line in self.path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step
        ]
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

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


def _autocast(device: torch.device, precision: str):
    if device.type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def _indices(step: int, micro: int, cfg: StageConfig, dist: Dist) -> list[int]:
    """Global sample indices of (step, micro-batch) on this process."""
    base = step * cfg.batch_size + micro * cfg.micro_batch_size * dist.world_size
    start = base + dist.rank * cfg.micro_batch_size
    return list(range(start, start + cfg.micro_batch_size))


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
    """
    cfg = task.config
    model = task.model
    accum = cfg.accumulation(dist.world_size)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=cfg.optim.lr,
        betas=cfg.optim.betas,
        eps=cfg.optim.eps,
        weight_decay=cfg.optim.weight_decay,
    )
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    log = MetricsLog(stage_dir / "metrics.jsonl", tb_dir, enabled=dist.is_main)

    start = 0
    last = latest_checkpoint(stage_dir)
    if last is not None:
        ckpt = load_checkpoint(last, device=dist.device)
        model.load_state_dict(ckpt.model, strict=True)
        optimizer.load_state_dict(ckpt.train_state["optimizer"])
        if ema is not None:
            if ckpt.ema is None:
                raise ValueError(f"{last} has no EMA weights but the stage keeps an EMA")
            ema.load_state_dict(ckpt.ema)
        restore_rng(ckpt.train_state["rng"])
        start = ckpt.step
        log.truncate_after(start)
        if dist.is_main:
            tqdm.write(f"[{task.name}] resuming from {last} (step {start})")
    else:
        broadcast_parameters(model)

    def save(step: int) -> None:
        if dist.is_main:
            save_checkpoint(
                stage_dir,
                step,
                model.state_dict(),
                ema.state_dict() if ema is not None else None,
                {"optimizer": optimizer.state_dict(), "rng": capture_rng()},
                keep_last=cfg.keep_last,
            )
        barrier()

    def eval_module() -> nn.Module:
        module = ema.module(model) if ema is not None else model
        return module.eval()

    def run_validation(step: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if task.validate is not None and dist.is_main:
            with torch.no_grad(), _autocast(dist.device, precision):
                metrics = task.validate(eval_module())
            log.write({"stage": task.name, "split": "val", "step": step, **metrics})
            tqdm.write(
                f"[{task.name}] step {step} val "
                + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            )
            model.train()
        barrier()
        return metrics

    bar = tqdm(
        total=cfg.steps,
        initial=start,
        desc=task.name,
        disable=not (dist.is_main and progress),
        dynamic_ncols=True,
        mininterval=1.0,
    )
    model.train()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    window_start, window_samples = time.perf_counter(), 0
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    step = start
    loss_value = float("nan")
    for step in range(start, end):
        lr = lr_at(step, cfg.optim, cfg.steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        micro_batches = []
        for micro in range(accum):
            idx = _indices(step, micro, cfg, dist)
            micro_batches.append((idx, task.make_batch(step, micro, idx)))
        dens = [
            task.denominator(b) if task.denominator is not None else torch.tensor(float(len(i)))
            for i, b in micro_batches
        ]
        global_den = all_reduce_sum(torch.stack(dens).sum().to(dist.device, torch.float64))
        scale = dist.world_size / float(global_den.clamp_min(1e-12))
        sums = torch.zeros(2, device=dist.device, dtype=torch.float64)  # numerators, extras
        logs: dict[str, float] = {}
        for idx, batch in micro_batches:
            with _autocast(dist.device, precision):
                out = task.loss(model, batch, step, idx)
            total = out.numerator.float() * scale
            sums[0] += out.numerator.detach().double()
            if out.extra is not None:
                total = total + out.extra.float() * dist.world_size
                sums[1] += out.extra.detach().double()
            total.backward()
            for k, v in out.logs.items():
                logs[k] = logs.get(k, 0.0) + float(v) / accum
        average_gradients(params, dist.world_size)
        grad_norm = float("nan")
        if cfg.optim.clip_grad_norm > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.optim.clip_grad_norm))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(model, step)

        sums = all_reduce_sum(sums)
        loss_value = float(sums[0] / global_den + sums[1])
        window_samples += cfg.batch_size
        done = step + 1
        bar.update(1)
        if done % cfg.log_every == 0 or done == cfg.steps:
            now = time.perf_counter()
            rate = window_samples / max(now - window_start, 1e-9)
            window_start, window_samples = now, 0
            if dist.distributed:
                packed = torch.tensor(list(logs.values()), device=dist.device, dtype=torch.float64)
                packed = all_reduce_sum(packed) / dist.world_size
                logs = dict(zip(logs, packed.tolist(), strict=True))
            log.write(
                {
                    "stage": task.name,
                    "step": done,
                    "loss": loss_value,
                    "lr": lr,
                    "grad_norm": grad_norm,
                    "samples_per_s": rate,
                    **logs,
                }
            )
            bar.set_postfix(loss=f"{loss_value:.4g}", samples_s=f"{rate:.1f}", refresh=False)
        if cfg.save_every and done % cfg.save_every == 0 and done < cfg.steps:
            save(done)
        if cfg.val_every and done % cfg.val_every == 0 and done < cfg.steps:
            run_validation(done)
        if task.preview is not None and cfg.preview_every and done % cfg.preview_every == 0:
            if dist.is_main:
                task.preview(eval_module(), done)
                model.train()
            barrier()
    bar.close()

    finished = end == cfg.steps
    if stop_after is not None and not finished:
        if end > start:
            save(end)
        log.close()
        return {"stage": task.name, "step": end, "finished": False}
    newest = latest_checkpoint(stage_dir)
    if newest is None or checkpoint_step(newest) != cfg.steps:
        save(cfg.steps)
    metrics = run_validation(cfg.steps)
    summary = {
        "stage": task.name,
        "step": cfg.steps,
        "finished": True,
        "final_loss": loss_value,
        "val": metrics,
        # of this call (a resumed stage counts only its last part)
        "wall_s": time.perf_counter() - wall0,
        "cpu_s": time.process_time() - cpu0,
        **task.info,
    }
    if dist.is_main:
        task.export(eval_module(), stage_dir / "final")
        atomic_write_text(stage_dir / DONE_NAME, json.dumps(summary, indent=2) + "\n")
    barrier()
    log.close()
    return summary
