from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import nn

from attnlab.backbones import TransformerEncoder
from attnlab.training import param_groups, warmup_cosine_schedule


def test_weight_decay_only_on_matrices():
    model = TransformerEncoder(dim=16, depth=1, num_heads=2, pos_encoding="learned")
    decay, no_decay = param_groups(model, weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_warmup_then_cosine_to_floor():
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0)
    schedule = warmup_cosine_schedule(optimizer, total_steps=100, warmup_steps=10, min_lr_ratio=0.1)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert math.isclose(rates[0], 0.1) and math.isclose(rates[9], 1.0)
    assert all(a >= b for a, b in pairwise(rates[10:]))  # monotone decay after warm-up
    assert math.isclose(rates[55], 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 45 / 90)), rel_tol=1e-6)
    assert rates[-1] > 0.1 - 1e-9 and rates[-1] < 0.11
