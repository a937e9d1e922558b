"""What a training stage carries from step to step: weights, optimizer, EMA and the step.

:class:`TrainState` is the unit that ``trajloom_train.checkpoint`` saves and restores (with
the RNG states); the loop in ``trajloom_train.trainer`` only advances it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from trajloom_train.config import StageConfig

__all__ = ["EMA", "TrainState"]


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


@dataclass
class TrainState:
    """The model, its AdamW optimizer, the EMA (or None) and the number of steps taken."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    ema: EMA | None
    step: int = 0

    @classmethod
    def create(cls, model: nn.Module, config: StageConfig) -> TrainState:
        """A fresh state for ``model`` with the stage's optimizer settings."""
        optim = config.optim
        optimizer = torch.optim.AdamW(
            cls.trainable(model),
            lr=optim.lr,
            betas=optim.betas,
            eps=optim.eps,
            weight_decay=optim.weight_decay,
        )
        ema = EMA(model, config.ema_decay) if config.ema_decay > 0 else None
        return cls(model, optimizer, ema)

    @staticmethod
    def trainable(model: nn.Module) -> list[nn.Parameter]:
        return [p for p in model.parameters() if p.requires_grad]

    @property
    def params(self) -> list[nn.Parameter]:
        return self.trainable(self.model)

    def eval_module(self) -> nn.Module:
        """The weights to validate, preview and export: the EMA copy when there is one."""
        module = self.ema.module(self.model) if self.ema is not None else self.model
        return module.eval()
