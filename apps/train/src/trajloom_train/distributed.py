"""Processes and devices: one process, or many under ``torchrun`` (gloo on CPU, NCCL on GPU).

Gradients are averaged by torch's ``DistributedDataParallel``, which the trainer wraps
around each stage's loss (``trajloom_train.trainer.data_parallel``); what is left here is
joining the process group and the few collectives the loop needs besides gradients
(summed loss denominators and logs, barriers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

__all__ = [
    "Dist",
    "all_reduce_sum",
    "barrier",
    "init_distributed",
    "shutdown",
]


@dataclass(frozen=True)
class Dist:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _pick_device(device: str, local_rank: int) -> torch.device:
    if device == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but torch sees no CUDA device")
        return torch.device(f"cuda:{local_rank}")
    if device == "cpu":
        return torch.device("cpu")
    raise ValueError(f"--device must be auto, cpu or cuda, got {device!r}")


def init_distributed(device: str = "auto") -> Dist:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Without ``WORLD_SIZE`` (or with 1) this is a single process. Multi-node runs use
    torchrun's rendezvous (``--nnodes``, ``--rdzv-endpoint``); nothing here is node-aware
    beyond ``LOCAL_RANK`` choosing the GPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _pick_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over processes (in place, also returned); identity in one process."""
    if dist.is_initialized():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x
