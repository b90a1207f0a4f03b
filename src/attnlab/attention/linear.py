"""Linear attention (Katharopoulos et al., 2020): softmax replaced by a positive feature map.

out_i = phi(q_i) . sum_j phi(k_j) v_j^T / (phi(q_i) . sum_j phi(k_j)), phi(x) = elu(x) + 1.
Non-causal: one (Dh x Dh) summary per head, O(n Dh^2) time, O(n Dh + Dh^2) memory.
Causal: chunks of c tokens; within a chunk a masked c x c product, across chunks a running
prefix sum of the summaries: O(n (c + Dh) Dh) time, O(n c + (n / c) Dh^2) memory.
Both paths loop over groups of about 1,024 tokens so that temporaries stay bounded.

Shape legend: B batch, H heads, n tokens (Tq, Tk when they differ), Dh head dim.
"""

from __future__ import annotations

import math
from itertools import repeat

import torch
import torch.nn.functional as F
from torch import Tensor

from attnlab.attention.multihead import MultiHeadAttention
from attnlab.attention.sdpa import causal_mask

_GROUP_TOKENS = 1024  # tokens processed per loop step on both paths (bounds temporary tensors)


class _EluPlusOne(torch.autograd.Function):
    """phi(x) = elu(x) + 1 = exp(min(x, 0)) + max(x, 0), with derivative min(phi(x), 1).

    Written with exp instead of F.elu: torch's AVX-512 CPU kernel of elu (expm1) runs about 4x slower
    than exp (31 ms vs 7 ms for 8.4M floats on 2 cores), and exp(x) avoids elu's -1 + 1 cancellation.
    The backward needs only the output.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        phi = x.clamp_max(0.0).exp_().add_(x.clamp_min(0.0))
        ctx.save_for_backward(phi)
        return phi

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (phi,) = ctx.saved_tensors
        return grad * phi.clamp_max(1.0)  # exp(x) for x <= 0, 1 for x > 0


def elu_feature_map(x: Tensor) -> Tensor:
    """phi(x) = elu(x) + 1 > 0, elementwise."""
    return _EluPlusOne.apply(x)


def _share_kv_heads(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    if k.shape[1] == q.shape[1]:
        return k, v
    repeats = q.shape[1] // k.shape[1]  # GQA: every key/value head serves H / Hkv query heads
    return k.repeat_interleave(repeats, dim=1), v.repeat_interleave(repeats, dim=1)


def _keep(key_padding_mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """(B, n) bool, True = real -> (B, 1, n, 1) multiplier that zeroes padded keys."""
    return None if key_padding_mask is None else key_padding_mask[:, None, :, None].to(dtype)


def _key_features(k: Tensor, keep: Tensor | None) -> Tensor:
    """phi(k) with padded keys zeroed: they contribute nothing."""
    phi_k = elu_feature_map(k)
    return phi_k if keep is None else phi_k * keep


def _key_terms(k: Tensor, v: Tensor, keep: Tensor | None) -> tuple[Tensor, Tensor]:
    """phi(k) (padded keys zeroed) and v with a ones column that carries the normaliser: (.., Dv + 1)."""
    return _key_features(k, keep), torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)


def _normalise(ext: Tensor, eps: float) -> Tensor:
    """(.., Dv + 1) numerator | denominator -> (.., Dv)."""
    numerator, denominator = ext.split([ext.shape[-1] - 1, 1], dim=-1)
    return numerator / (denominator + eps)


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
    """q (B, H, n, Dh), k, v (B, Hkv, n, Dh) -> (B, H, n, Dv); key_padding_mask (B, n) True = real.

    Tokens are processed in groups of about 1,024: every temporary is group-sized (it stays in cache
    and below the allocator's mmap threshold), and only the output and the gradients of q, k, v
    are full length. Groups come from `split`, whose backward concatenates the pieces once (slicing
    would write a zero-filled full-length gradient per group).
    """
    out_dtype = q.dtype
    with _float32_sums(q.device):
        q, k, v = (x.to(_accumulation_dtype(x.dtype)) for x in (q, k, v))
        out = _linear_attention(q, k, v, is_causal=is_causal, key_padding_mask=key_padding_mask,
                                chunk_size=chunk_size, eps=eps)
    return out.to(out_dtype)


def _accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for bf16 / fp16 inputs (running sums over thousands of keys lose the normaliser in
    8 mantissa bits), the input dtype otherwise (float64 stays float64)."""
    return torch.promote_types(dtype, torch.float32)


def _float32_sums(device: torch.device) -> torch.autocast:
    """Autocast off: under bf16-mixed it would run the summary matmuls in bf16 again."""
    return torch.autocast(device_type=device.type, enabled=False)


def _linear_attention(
    q: Tensor, k: Tensor, v: Tensor, *, is_causal: bool, key_padding_mask: Tensor | None, chunk_size: int, eps: float
) -> Tensor:
    k, v = _share_kv_heads(q, k, v)
    batch, heads, length, head_dim = q.shape
    value_dim = v.shape[-1]
    keep = _keep(key_padding_mask, q.dtype)  # (B, 1, n, 1)
    state = q.new_zeros(batch, heads, head_dim, value_dim + 1)  # sum of phi(k) [v | 1]^T over keys so far

    if not is_causal:
        keeps = repeat(None) if keep is None else keep.split(_GROUP_TOKENS, dim=2)
        for group_k, group_v, group_keep in zip(k.split(_GROUP_TOKENS, dim=2), v.split(_GROUP_TOKENS, dim=2), keeps):
            phi_k, v_ext = _key_terms(group_k, group_v, group_keep)
            state = state + phi_k.transpose(-2, -1) @ v_ext  # (B, H, Dh, Dv + 1)
        pieces = [_normalise(elu_feature_map(group_q) @ state, eps) for group_q in q.split(_GROUP_TOKENS, dim=2)]
        return torch.cat(pieces, dim=2) if len(pieces) > 1 else pieces[0]

    chunk = min(chunk_size, length)
    group = chunk * max(1, _GROUP_TOKENS // chunk)  # tokens per loop step, a multiple of the chunk
    padded = math.ceil(length / chunk) * chunk
    if padded != length:  # padded keys come after every real query, so causality keeps them out
        q, k, v = (F.pad(x, (0, 0, 0, padded - length)) for x in (q, k, v))
        keep = None if keep is None else F.pad(keep, (0, 0, 0, padded - length))
    keeps = repeat(None) if keep is None else keep.split(group, dim=2)
    pieces = []
    for group_q, group_k, group_v, group_keep in zip(
        q.split(group, dim=2), k.split(group, dim=2), v.split(group, dim=2), keeps
    ):  # the state carries across groups
        phi_k, v_ext = _key_terms(group_k, group_v, group_keep)
        nc = group_q.shape[2] // chunk
        cq, ck, cv = (  # (B, H, g, d) -> (B, H, nc, c, d)
            x.reshape(batch, heads, nc, chunk, x.shape[-1]) for x in (elu_feature_map(group_q), phi_k, v_ext)
        )
        chunk_summary = ck.transpose(-2, -1) @ cv  # (B, H, nc, Dh, Dv + 1)
        # state before each chunk: carried state + exclusive prefix sum over this group's chunks
        before = chunk_summary.cumsum(dim=2) - chunk_summary + state.unsqueeze(2)
        local = (cq @ ck.transpose(-2, -1)).tril_()  # (B, H, nc, c, c): keys at or before the query
        pieces.append(_normalise((cq @ before + local @ cv).flatten(2, 3), eps))  # (B, H, g, Dv)
        state = state + chunk_summary.sum(dim=2)
    out = torch.cat(pieces, dim=2) if len(pieces) > 1 else pieces[0]
    return out if padded == length else out[:, :, :length]


def linear_attention_weights(
    q: Tensor,
    k: Tensor,
    *,
    is_causal: bool = False,
    key_padding_mask: Tensor | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """Dense (B, H, Tq, Tk) weights of linear attention (O(Tq Tk)); causal is lower-right aligned.

    Computed in float32 at least (returned in q's dtype), like `linear_attention`.
    """
    out_dtype = q.dtype
    with _float32_sums(q.device):
        q, k = q.to(_accumulation_dtype(q.dtype)), k.to(_accumulation_dtype(k.dtype))
        k, _ = _share_kv_heads(q, k, k)
        phi_q, phi_k = elu_feature_map(q), _key_features(k, _keep(key_padding_mask, q.dtype))
        scores = phi_q @ phi_k.transpose(-2, -1)  # (B, H, Tq, Tk)
        if is_causal:
            scores = scores * causal_mask(q.shape[2], k.shape[2], q.device).to(scores.dtype)
        return (scores / (scores.sum(-1, keepdim=True) + eps)).to(out_dtype)


class LinearAttention(MultiHeadAttention):
    """Multi-head linear attention with the elu + 1 feature map, causal or not.

    Arbitrary attention masks and score biases (relative, ALiBi) do not factorise and are rejected;
    rotations (RoPE) apply to q and k before the feature map. A KV cache works (each step recomputes
    over cached keys, O(Tk) per step); `need_weights` returns the dense normalised weights.

    Args:
        chunk_size: block length of the causal path (``attention.chunk_size``).
        others: as `MultiHeadAttention` (backend and dropout are unused: no softmax kernel runs).
    """

    accepts_attn_mask = False  # no score matrix to add a mask to

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
            with _float32_sums(q.device):  # the weighted sum over every cached key, in float32 too
                out = (weights.to(_accumulation_dtype(v.dtype)) @ v.to(_accumulation_dtype(v.dtype))).to(v.dtype)
            return out, (weights if need_weights else None)
        out = linear_attention(
            q, k, v, is_causal=is_causal, key_padding_mask=key_padding_mask, chunk_size=self.chunk_size
        )
        return out, None
