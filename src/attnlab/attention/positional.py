"""Positional encodings behind one interface the backbones and attention modules share.

A `PositionalEncoding` can act at three places; each default is a no-op:
- ``embed(x)``: absolute encodings added to the token sequence (sinusoidal, learned);
- ``rotate(q, k, q_start, k_start)``: rotations of queries/keys inside attention (RoPE);
- ``bias(q_len, k_len, ...)``: an additive score bias (ALiBi, relative position buckets).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class PositionalEncoding(nn.Module):
    """No positional information (the identity at all three hooks)."""

    def embed(self, x: Tensor) -> Tensor:  # x: (B, N, D)
        return x

    def rotate(self, q: Tensor, k: Tensor, *, q_start: int = 0, k_start: int = 0) -> tuple[Tensor, Tensor]:
        return q, k  # (B, H, T, Dh)

    def bias(self, q_len: int, k_len: int, *, q_start: int = 0, device=None, dtype=None) -> Tensor | None:
        return None  # or (H | 1, Tq, Tk)


class SinusoidalPositionalEncoding(PositionalEncoding):
    """Fixed sin/cos absolute encoding of Vaswani et al. (2017), added to the tokens."""

    def __init__(self, *, dim: int, max_len: int = 4096, base: float = 10000.0) -> None:
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)  # (L, 1)
        freq = torch.exp(torch.arange(0, dim, 2) * (-math.log(base) / dim))  # (ceil(D/2),)
        table = torch.zeros(max_len, dim)
        table[:, 0::2] = torch.sin(position * freq)
        table[:, 1::2] = torch.cos(position * freq[: dim // 2])
        self.register_buffer("table", table, persistent=False)  # (L, D)

    def embed(self, x: Tensor) -> Tensor:
        _check_length(x.shape[1], self.table.shape[0])
        return x + self.table[: x.shape[1]].to(x.dtype)


class LearnedPositionalEncoding(PositionalEncoding):
    """Learned absolute position embeddings (BERT / ViT style), added to the tokens."""

    def __init__(self, *, dim: int, max_len: int = 4096, init_std: float = 0.02) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(max_len, dim) * init_std)  # (L, D)

    def embed(self, x: Tensor) -> Tensor:
        _check_length(x.shape[1], self.weight.shape[0])
        return x + self.weight[: x.shape[1]].to(x.dtype)


def _check_length(length: int, max_len: int) -> None:
    if length > max_len:
        raise ValueError(
            f"sequence length {length} exceeds the positional table ({max_len}); raise backbone.max_len"
        )


POSITIONAL_ENCODINGS: dict[str, type[PositionalEncoding]] = {
    "none": PositionalEncoding,
    "sinusoidal": SinusoidalPositionalEncoding,
    "learned": LearnedPositionalEncoding,
}


def build_positional_encoding(kind: str, *, dim: int, num_heads: int, max_len: int) -> PositionalEncoding:
    """Build the encoding named by `backbone.pos_encoding`."""
    if kind not in POSITIONAL_ENCODINGS:
        raise ValueError(
            f"backbone.pos_encoding='{kind}' is unknown; choose one of {', '.join(POSITIONAL_ENCODINGS)}"
        )
    if kind == "none":
        return PositionalEncoding()
    return POSITIONAL_ENCODINGS[kind](dim=dim, max_len=max_len)
