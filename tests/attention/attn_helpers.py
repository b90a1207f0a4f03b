"""Shared helpers for the attention tests: seeded inputs and a norm-wise relative error."""

from __future__ import annotations

import torch


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected||, computed in float64."""
    actual, expected = actual.detach().double(), expected.detach().double()
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-30))


def qkv(batch=2, heads=4, kv_heads=None, q_len=33, k_len=None, head_dim=16, dtype=torch.float32, seed=0):
    """Random (B, H, Tq, Dh) queries and (B, Hkv, Tk, Dh) keys/values."""
    gen = torch.Generator().manual_seed(seed)
    kv_heads = kv_heads or heads
    k_len = k_len or q_len
    q = torch.randn(batch, heads, q_len, head_dim, generator=gen, dtype=torch.float64)
    k = torch.randn(batch, kv_heads, k_len, head_dim, generator=gen, dtype=torch.float64)
    v = torch.randn(batch, kv_heads, k_len, head_dim, generator=gen, dtype=torch.float64)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def padding_mask(batch: int, length: int, lengths: list[int]) -> torch.Tensor:
    """(B, T) bool, True for the first lengths[b] tokens."""
    return torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]
