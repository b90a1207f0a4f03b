"""Linear attention (Katharopoulos et al., 2020): softmax replaced by a positive feature map.

out_i = phi(q_i) . sum_j phi(k_j) v_j^T / (phi(q_i) . sum_j phi(k_j)), phi(x) = elu(x) + 1.
Non-causal: one (Dh x Dh) summary per head, O(n Dh^2) time, O(n Dh + Dh^2) memory.
Causal: chunks of c tokens; within a chunk a masked c x c product, across chunks a running
prefix sum of the summaries (loops over groups of chunks so that temporaries stay bounded):
O(n (c + Dh) Dh) time, O(n c + (n / c) Dh^2) memory.

Shape legend: B batch, H heads, n tokens (Tq, Tk when they differ), Dh head dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from attnlab.attention.multihead import MultiHeadAttention
from attnlab.attention.sdpa import causal_mask

_GROUP_TOKENS = 1024  # causal path: tokens processed per loop step (bounds temporary tensors)


def elu_feature_map(x: Tensor) -> Tensor:
    """phi(x) = elu(x) + 1 > 0 (in place on elu's output: its backward needs only x)."""
    return F.elu(x).add_(1.0)


def _features(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    if k.shape[1] != q.shape[1]:  # GQA: share key/value heads between query heads
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    phi_q, phi_k = elu_feature_map(q), elu_feature_map(k)
    if key_padding_mask is not None:  # padded keys contribute nothing
        phi_k = phi_k.mul_(key_padding_mask[:, None, :, None].to(phi_k.dtype))
    return phi_q, phi_k, v


def linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    is_causal: bool = False,
    key_padding_mask: Tensor | None = None,
    chunk_size: int = 64,
    eps: float = 1e-6,
) -> Tensor:
    """q (B, H, n, Dh), k, v (B, Hkv, n, Dh) -> (B, H, n, Dv); key_padding_mask (B, n) True = real."""
    phi_q, phi_k, v = _features(q, k, v, key_padding_mask)
    if not is_causal:
        summary = phi_k.transpose(-2, -1) @ v  # (B, H, Dh, Dv)
        normalizer = phi_k.sum(dim=2)  # (B, H, Dh)
        numerator = phi_q @ summary  # (B, H, n, Dv)
        denominator = phi_q @ normalizer.unsqueeze(-1)  # (B, H, n, 1)
        return numerator / (denominator + eps)

    batch, heads, length, head_dim = phi_q.shape
    value_dim = v.shape[-1]
    chunk = min(chunk_size, length)
    group = chunk * max(1, _GROUP_TOKENS // chunk)  # tokens per step of the loop below
    padded = math.ceil(length / chunk) * chunk
    if padded != length:
        phi_q, phi_k, v = (F.pad(x, (0, 0, 0, padded - length)) for x in (phi_q, phi_k, v))
    # a ones column on v carries the normaliser through the same products: (B, H, n, Dv + 1)
    v_ext = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
    state = phi_q.new_zeros(batch, heads, head_dim, value_dim + 1)  # sum of phi(k) v_ext^T so far
    pieces = []
    for start in range(0, padded, group):  # bounded temporaries: the state carries across groups
        stop = min(start + group, padded)
        nc = (stop - start) // chunk

        cq, ck, cv = (  # (B, H, n, d) -> (B, H, nc, c, d)
            x[:, :, start:stop].reshape(batch, heads, nc, chunk, x.shape[-1]) for x in (phi_q, phi_k, v_ext)
        )
        chunk_summary = ck.transpose(-2, -1) @ cv  # (B, H, nc, Dh, Dv + 1)
        # state before each chunk: carried state + exclusive prefix sum over this group's chunks
        before = chunk_summary.cumsum(dim=2) - chunk_summary + state.unsqueeze(2)
        local = (cq @ ck.transpose(-2, -1)).tril_()  # (B, H, nc, c, c): keys at or before the query
        pieces.append((cq @ before + local @ cv).flatten(2, 3))  # (B, H, nc * c, Dv + 1)
        state = state + chunk_summary.sum(dim=2)
    ext = torch.cat(pieces, dim=2) if len(pieces) > 1 else pieces[0]
    out = ext[..., :value_dim] / (ext[..., value_dim:] + eps)
    return out[:, :, :length]


def linear_attention_weights(
    q: Tensor,
    k: Tensor,
    *,
    is_causal: bool = False,
    key_padding_mask: Tensor | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """Dense (B, H, Tq, Tk) weights of linear attention (O(Tq Tk)); causal is lower-right aligned."""
    phi_q, phi_k, _ = _features(q, k, k, key_padding_mask)
    scores = phi_q @ phi_k.transpose(-2, -1)  # (B, H, Tq, Tk)
    if is_causal:
        scores = scores * causal_mask(q.shape[2], k.shape[2], q.device).to(scores.dtype)
    return scores / (scores.sum(-1, keepdim=True) + eps)


class LinearAttention(MultiHeadAttention):
    """Multi-head linear attention with the elu + 1 feature map, causal or not.

    Arbitrary attention masks and score biases (relative, ALiBi) do not factorise and are rejected;
    rotations (RoPE) apply to q and k before the feature map. A KV cache works (each step recomputes
    over cached keys, O(Tk) per step); `need_weights` returns the dense normalised weights.

    Args:
        chunk_size: block length of the causal path (``attention.chunk_size``).
        others: as `MultiHeadAttention` (backend and dropout are unused: no softmax kernel runs).
    """

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        chunk_size: int = 64,
        num_kv_heads: int | None = None,
        kv_dim: int | None = None,
        cross: bool = False,
        bias: bool = True,
        dropout: float = 0.0,
        backend: str = "auto",
        strict: bool = True,
    ) -> None:
        super().__init__(
            dim=dim, num_heads=num_heads, num_kv_heads=num_kv_heads, kv_dim=kv_dim, cross=cross, bias=bias,
            dropout=dropout, backend=backend, strict=strict,
        )
        if chunk_size < 1:
            raise ValueError(f"attention.chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size

    def attend(self, q, k, v, *, key_padding_mask, attn_mask, is_causal, positions, q_start, need_weights):
        if attn_mask is not None:
            raise ValueError("linear attention cannot apply an attn_mask; use key_padding_mask and is_causal")
        if positions is not None and positions.bias(1, 1, device=q.device) is not None:
            raise ValueError(
                "linear attention cannot add a score bias; use backbone.pos_encoding=rope, sinusoidal or learned"
            )
        if need_weights or q.shape[2] != k.shape[2]:
            weights = linear_attention_weights(q, k, is_causal=is_causal, key_padding_mask=key_padding_mask)
            if k.shape[1] != q.shape[1]:
                v = v.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
            return weights @ v, (weights if need_weights else None)
        out = linear_attention(
            q, k, v, is_causal=is_causal, key_padding_mask=key_padding_mask, chunk_size=self.chunk_size
        )
        return out, None
