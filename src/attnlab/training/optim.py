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


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    warmup_steps: int | None = None,
    warmup_fraction: float = 0.05,
    min_lr_ratio: float = 0.01,
) -> LambdaLR:
    """Linear warm-up from 0, then cosine decay to `min_lr_ratio` x the base rate at `total_steps`."""
    if total_steps <= 0:
        raise ValueError(f"total_steps ({total_steps}) must be positive")
    warmup = max(1, int(total_steps * warmup_fraction)) if warmup_steps is None else warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)

