"""Low-rank attention (Linformer, Wang et al., 2020): keys and values projected along the sequence.

K' = E K and V' = F V with learned E, F (k x max_len), so each query attends to k mixed keys:
O(n k Dh) time and O(n k) memory. The projections are sliced to the input length, so inputs up to
``max_len`` tokens work; causal masks do not survive the mixing and are rejected.

Shape legend: B batch, H heads, n tokens, k rank, Dh head dim.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attnlab.attention.multihead import MultiHeadAttention
from attnlab.attention.sdpa import Backend, scaled_dot_product_attention


def project_sequence(x: Tensor, projection: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
    """Mix x (B, H, n, d) along n with projection (k, >= n) -> (B, H, k, d); padded tokens are dropped."""
    if key_padding_mask is not None:
        x = x * key_padding_mask[:, None, :, None].to(x.dtype)
    return projection[:, : x.shape[2]].to(x.dtype) @ x  # (k, n) @ (B, H, n, d)


class LowRankAttention(MultiHeadAttention):
    """Multi-head Linformer attention with key and value sequence projections shared across heads.

    Args:
        rank: projected sequence length k (``attention.rank``).
        max_len: longest input (``attention.max_len``, by default ``backbone.max_len``).
        others: as `MultiHeadAttention`; no causal mask, attn_mask, score bias or KV cache.
    """

    supports_cache = False
    accepts_attn_mask = False  # mixes keys along the sequence

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        rank: int = 64,
        max_len: int = 4096,
        num_kv_heads: int | None = None,
        kv_dim: int | None = None,
        cross: bool = False,
        bias: bool = True,
        dropout: float = 0.0,
        backend: Backend = "auto",
        strict: bool = True,
    ) -> None:
        super().__init__(
            dim=dim, num_heads=num_heads, num_kv_heads=num_kv_heads, kv_dim=kv_dim, cross=cross, bias=bias,
            dropout=dropout, backend=backend, strict=strict,
        )
        if rank < 1 or max_len < 1:
            raise ValueError(f"attention.rank ({rank}) and attention.max_len ({max_len}) must be >= 1")
        self.rank, self.max_len = rank, max_len
        self.key_proj_seq = nn.Parameter(torch.randn(rank, max_len) / math.sqrt(rank))  # E: (k, max_len)
        self.value_proj_seq = nn.Parameter(torch.randn(rank, max_len) / math.sqrt(rank))  # F: (k, max_len)

    def attend(self, q, k, v, *, key_padding_mask, attn_mask, is_causal, positions, q_start, need_weights):
        if is_causal or attn_mask is not None:
            raise ValueError(
                "low-rank attention mixes keys along the sequence: no causal mask or attn_mask; "
                "use attention=sdpa for decoders"
            )
        if positions is not None and positions.bias(1, 1, device=q.device) is not None:
            raise ValueError(
                "low-rank attention cannot add a score bias; use backbone.pos_encoding=rope, sinusoidal or learned"
            )
        if k.shape[2] > self.max_len:
            raise ValueError(
                f"sequence length {k.shape[2]} exceeds attention.max_len ({self.max_len}); raise attention.max_len"
            )
        k = project_sequence(k, self.key_proj_seq, key_padding_mask)  # (B, Hkv, k, Dh)
        v = project_sequence(v, self.value_proj_seq, key_padding_mask)
        result = scaled_dot_product_attention(
            q,
            k,
            v,
            dropout_p=self.dropout if self.training else 0.0,
            backend=self.backend,
            strict=self.strict,
            return_weights=need_weights,
        )
        return result if need_weights else (result, None)
