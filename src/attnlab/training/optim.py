"""Optimizer and learning-rate schedule builders."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR


def param_groups(model: nn.Module, *, weight_decay: float) -> list[dict]:
    """Decay only >= 2-D weights (matmuls, embeddings); never biases, norms or 1-D scales."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module, optimizer: Callable[..., torch.optim.Optimizer], *, weight_decay: float
) -> torch.optim.Optimizer:
    return optimizer(param_groups(model, weight_decay=weight_decay))


class WarmupCosine:
    """LR factor at step t: linear warm-up from 0, then cosine decay to `min_lr_ratio` at `total_steps`.

    A callable object rather than a closure so that `LambdaLR.state_dict` stores its fields: a
    resumed run keeps the schedule it started with, even when ``trainer.max_epochs`` is raised on
    resume (steps past the original end stay at ``min_lr_ratio``, so the rate never jumps back up).
    """

    def __init__(self, *, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> None:
        self.total_steps, self.warmup_steps, self.min_lr_ratio = total_steps, warmup_steps, min_lr_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    warmup_steps: int | None = None,
    warmup_fraction: float = 0.05,
    min_lr_ratio: float = 0.01,
) -> LambdaLR:
    """Linear warm-up from 0, then cosine decay to `min_lr_ratio` x the base rate at `total_steps`.

    The length is fixed when the run starts and travels in the checkpoint (see `WarmupCosine`).
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps ({total_steps}) must be positive")
    warmup = max(1, int(total_steps * warmup_fraction)) if warmup_steps is None else warmup_steps
    return LambdaLR(optimizer, WarmupCosine(total_steps=total_steps, warmup_steps=warmup, min_lr_ratio=min_lr_ratio))
