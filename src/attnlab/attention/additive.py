"""Classic attention scores: additive (Bahdanau, 2015) and multiplicative (Luong, 2015).

Two forms of each:
- multi-head modules with the `MultiHeadAttention` interface, usable as encoder attention;
- single-query scorers for RNN-style decoders: one query (B, Dq) against keys (B, T, Dk).

Shape legend: B batch, H heads, Tq queries, Tk keys, Dh head dim.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from attnlab.attention.multihead import MultiHeadAttention, score_mask
from attnlab.attention.sdpa import Backend, scaled_dot_product_attention, softmax_attention

LuongScore = Literal["dot", "general"]


class AdditiveAttention(MultiHeadAttention):
    """Multi-head Bahdanau attention: score_h(i, j) = w_h . tanh(q_ih + k_jh), q and k already projected.

    Costs O(Tq * Tk * Dh) time and memory per head (the tanh of every query-key pair), so it suits
    short sequences; weights are always exact (no fused kernel exists for this score).

    Args: as `MultiHeadAttention` (the backend is unused: the score has no fused kernel).
    """

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        num_kv_heads: int | None = None,
        kv_dim: int | None = None,
        cross: bool = False,
        bias: bool = True,
        dropout: float = 0.0,
        backend: Backend = "reference",
        strict: bool = True,
    ) -> None:
        super().__init__(
            dim=dim,
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            kv_dim=kv_dim,
            cross=cross,
            bias=bias,
            dropout=dropout,
            backend=backend,
            strict=strict,
        )
        self.score_weight = nn.Parameter(torch.randn(num_heads, self.head_dim) / math.sqrt(self.head_dim))  # (H, Dh)

    def attend(self, q, k, v, *, key_padding_mask, attn_mask, is_causal, positions, q_start, need_weights):
        if self.num_kv_heads != self.num_heads:
            k = k.repeat_interleave(self.num_heads // self.num_kv_heads, dim=1)
            v = v.repeat_interleave(self.num_heads // self.num_kv_heads, dim=1)
        hidden = torch.tanh(q.unsqueeze(3) + k.unsqueeze(2))  # (B, H, Tq, Tk, Dh)
        scores = torch.einsum("bhqkd,hd->bhqk", hidden, self.score_weight)  # (B, H, Tq, Tk)
        mask = score_mask(q, k, key_padding_mask, attn_mask, positions, q_start)
        out, weights = softmax_attention(
            scores, v, attn_mask=mask, is_causal=is_causal, dropout_p=self.dropout if self.training else 0.0
        )
        return out, (weights if need_weights else None)


class LuongAttention(MultiHeadAttention):
    """Multi-head Luong attention: ``dot`` scores q.k, ``general`` scores q W_h k (a bilinear form per head).

    Scores are unscaled as in the paper unless ``scaled=True``; both run through the fused SDPA
    kernels (``general`` folds W_h into the queries), so cost and backends are those of
    `MultiHeadAttention`.

    Args:
        score: ``dot`` or ``general``.
        scaled: divide scores by sqrt(head dim) like the transformer.
        others: as `MultiHeadAttention`.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        score: LuongScore = "general",
        scaled: bool = False,
        num_kv_heads: int | None = None,
        kv_dim: int | None = None,
        cross: bool = False,
        bias: bool = True,
        dropout: float = 0.0,
        backend: Backend = "auto",
        strict: bool = True,
    ) -> None:
        super().__init__(
            dim=dim,
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            kv_dim=kv_dim,
            cross=cross,
            bias=bias,
            dropout=dropout,
            backend=backend,
            strict=strict,
        )
        if score not in ("dot", "general"):
            raise ValueError(f"attention.score='{score}' is unknown; choose dot or general")
        self.score, self.scale = score, (1.0 / math.sqrt(self.head_dim) if scaled else 1.0)
        eye = torch.eye(self.head_dim).expand(num_heads, -1, -1).clone()
        self.bilinear = nn.Parameter(eye) if score == "general" else None  # (H, Dh, Dh), starts as dot

    def attend(self, q, k, v, *, key_padding_mask, attn_mask, is_causal, positions, q_start, need_weights):
        if self.bilinear is not None:
            q = torch.einsum("bhqd,hde->bhqe", q, self.bilinear)  # q W_h: (B, H, Tq, Dh)
        mask = score_mask(q, k, key_padding_mask, attn_mask, positions, q_start)
        result = scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0,
            scale=self.scale,
            backend=self.backend,
            strict=self.strict,
            return_weights=need_weights,
        )
        return result if need_weights else (result, None)


class AdditiveScore(nn.Module):
    """Single-query Bahdanau attention: context = sum_t softmax_t(w . tanh(W_q q + W_k k_t)) k_t.

    Args:
        query_dim: width of the query (e.g. decoder state) Dq.
        key_dim: width of the keys/values (e.g. encoder states) Dk.
        hidden_dim: width of the tanh layer.
    """

    def __init__(self, *, query_dim: int, key_dim: int, hidden_dim: int = 128) -> None:
        super().__init__()
        self.query_proj = nn.Linear(query_dim, hidden_dim, bias=False)
        self.key_proj = nn.Linear(key_dim, hidden_dim, bias=True)
        self.score = nn.Linear(hidden_dim, 1, bias=False)

    def project_keys(self, keys: Tensor) -> Tensor:
        """keys (B, T, Dk) -> W_k k + b (B, T, hidden): fixed for a whole decode, so compute it once."""
        return self.key_proj(keys)

    def forward(
        self, query: Tensor, keys: Tensor, mask: Tensor | None = None, *, projected_keys: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """query (B, Dq), keys (B, T, Dk), mask (B, T) True = real -> (context (B, Dk), weights (B, T)).

        ``projected_keys`` is `project_keys(keys)` when the caller computed it once for many queries.
        """
        projected = self.key_proj(keys) if projected_keys is None else projected_keys  # (B, T, hidden)
        hidden = torch.tanh(self.query_proj(query).unsqueeze(1) + projected)  # (B, T, hidden)
        scores = self.score(hidden).squeeze(-1)  # (B, T)
        return _single_query(scores, keys, mask)


class MultiplicativeScore(nn.Module):
    """Single-query Luong attention: ``dot`` scores q . k_t, ``general`` scores q W k_t.

    Args:
        query_dim: width of the query Dq (must equal key_dim for ``dot``).
        key_dim: width of the keys/values Dk.
        score: ``dot`` or ``general``.
    """

    def __init__(self, *, query_dim: int, key_dim: int, score: LuongScore = "general") -> None:
        super().__init__()
        if score not in ("dot", "general"):
            raise ValueError(f"score='{score}' is unknown; choose dot or general")
        if score == "dot" and query_dim != key_dim:
            raise ValueError(f"dot scoring needs query_dim == key_dim, got {query_dim} and {key_dim}")
        self.proj = nn.Linear(query_dim, key_dim, bias=False) if score == "general" else nn.Identity()

    def project_keys(self, keys: Tensor) -> Tensor:
        """The keys themselves (the ``general`` weight multiplies the query): the `AdditiveScore` interface."""
        return keys

    def forward(
        self, query: Tensor, keys: Tensor, mask: Tensor | None = None, *, projected_keys: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """query (B, Dq), keys (B, T, Dk), mask (B, T) True = real -> (context (B, Dk), weights (B, T))."""
        scores = (keys @ self.proj(query).unsqueeze(-1)).squeeze(-1)  # (B, T)
        return _single_query(scores, keys, mask)


def _single_query(scores: Tensor, keys: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Softmax scores (B, T) over keys (B, T, Dk) -> (context (B, Dk), weights (B, T))."""
    attn_mask = None if mask is None else mask[:, None, None, :].bool()  # (B, 1, 1, T)
    context, weights = softmax_attention(scores[:, None, None, :], keys[:, None], attn_mask=attn_mask)
    return context[:, 0, 0], weights[:, 0, 0]


__all__ = ["AdditiveAttention", "AdditiveScore", "LuongAttention", "MultiplicativeScore"]
