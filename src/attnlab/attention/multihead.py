"""Multi-head self- and cross-attention over the `scaled_dot_product_attention` wrapper."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnlab.attention.positional import PositionalEncoding
from attnlab.attention.sdpa import Backend, scaled_dot_product_attention


@dataclass
class KVCache:
    """Keys and values of earlier decoding steps, (B, Hkv, S, Dh) each; grows by `append`."""

    k: Tensor | None = None
    v: Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v

    def select(self, indices: Tensor) -> KVCache:
        """Keep batch rows `indices` (N,) long in that order, repeats allowed (beam reordering/expansion).

        In place (an empty cache stays empty); returns self.
        """
        if self.k is not None and self.v is not None:
            self.k = self.k.index_select(0, indices)  # (N, Hkv, S, Dh)
            self.v = self.v.index_select(0, indices)
        return self


class MultiHeadAttention(nn.Module):
    """Multi-head attention: fused QKV projection for self-attention, separate Q and KV for cross.

    Args:
        dim: model width D (queries and output).
        num_heads: query heads H; head dim is D / H.
        num_kv_heads: key/value heads (GQA when 1 < Hkv < H, MQA when 1); defaults to H.
        kv_dim: width of the context for cross-attention; defaults to D.
        cross: project queries and keys/values separately (cross-attention).
        backend: kernel for `scaled_dot_product_attention` (auto, flash, efficient, cudnn, math, reference).
        dropout: attention-weight dropout, training only (any value > 0 forces the math kernel on CPU).
    """

    supports_cache = True  # variants that mix keys along the sequence set this to False
    accepts_attn_mask = True  # variants that build their own mask (or none) and reject ``attn_mask`` set False
    # set by `attnlab.attention.capture_attention`: called with q, k (after rotary positions), v and
    # the (B, H, Tq, Tk) weights of every forward while a capture is active
    recorder: Callable[..., None] | None = None
    # set by `attnlab.attention.capture.edit_qkv`: ``q, k, v = qkv_editor(q=q, k=k, v=v)`` right before
    # `attend` (q (B, H, Tq, Dh) and k (B, Hkv, Tk, Dh) after rotary positions and the KV cache), for ablations
    qkv_editor: Callable[..., tuple[Tensor, Tensor, Tensor]] | None = None

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
        backend: Backend = "auto",
        strict: bool = True,
    ) -> None:
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if dim % num_heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        if num_heads % num_kv_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must be divisible by num_kv_heads ({num_kv_heads})")
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = dim // num_heads
        self.cross, self.backend, self.strict, self.dropout = cross, backend, strict, dropout
        q_width, kv_width = num_heads * self.head_dim, num_kv_heads * self.head_dim
        if cross:
            self.q_proj = nn.Linear(dim, q_width, bias=bias)
            self.kv_proj = nn.Linear(kv_dim or dim, 2 * kv_width, bias=bias)
        else:
            self.qkv_proj = nn.Linear(dim, q_width + 2 * kv_width, bias=bias)
        self.out_proj = nn.Linear(q_width, dim, bias=bias)

    def _split_heads(self, x: Tensor, heads: int) -> Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, heads, self.head_dim).transpose(1, 2)  # (B, heads, T, Dh)

    def project(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Queries from x (B, Tq, D), keys/values from context (cross) or x (self)."""
        kv_width = self.num_kv_heads * self.head_dim
        if self.cross:
            if context is None:
                raise ValueError("cross-attention needs a context tensor")
            q = self.q_proj(x)
            k, v = self.kv_proj(context).split([kv_width, kv_width], dim=-1)
        else:
            q, k, v = self.qkv_proj(x).split([self.num_heads * self.head_dim, kv_width, kv_width], dim=-1)
        return (
            self._split_heads(q, self.num_heads),  # (B, H, Tq, Dh)
            self._split_heads(k, self.num_kv_heads),  # (B, Hkv, Tk, Dh)
            self._split_heads(v, self.num_kv_heads),
        )

    def forward(
        self,
        x: Tensor,
        *,
        context: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        positions: PositionalEncoding | None = None,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Attend from x (B, Tq, D) to context (B, Tk, Dkv) or to x itself.

        Args:
            key_padding_mask: (B, Tk) bool, True for real keys (covering cached keys when decoding).
            attn_mask: bool (True = allowed) or float bias broadcastable to (B, H, Tq, Tk).
            positions: positional encoding whose `rotate`/`bias` hooks apply inside self-attention
                (cross-attention ignores it).
            cache: KV cache for incremental decoding. Self-attention appends each step's keys/values;
                cross-attention projects the context into an empty cache once and reuses it.
            need_weights: also return (B, H, Tq, Tk) weights (runs the reference path).
        """
        if context is not None and not self.cross:
            raise ValueError(f"{type(self).__name__} got a context but was built for self-attention (cross=False)")
        if cache is not None and not self.supports_cache:
            raise ValueError(f"{type(self).__name__} has no KV cache; use attention=sdpa for incremental decoding")
        if self.cross:
            positions = None  # query and context positions live in different sequences
        if cache is not None and self.cross and cache.length > 0:
            q = self._split_heads(self.q_proj(x), self.num_heads)  # context keys/values are cached once
            k, v = cache.k, cache.v
            q_start = 0
        else:
            q, k, v = self.project(x, context)
            q_start = cache.length if cache is not None and not self.cross else 0
            if positions is not None:
                q, k = positions.rotate(q, k, q_start=q_start, k_start=q_start)
            if cache is not None:
                k, v = cache.append(k, v)
        if self.qkv_editor is not None:  # `edit_qkv` is on: the attention sees the edited q, k, v
            q, k, v = self.qkv_editor(q=q, k=k, v=v)
        recording = self.recorder is not None  # `capture_attention` is on: weights through the reference path
        out, weights = self.attend(
            q,
            k,
            v,
            key_padding_mask=key_padding_mask,
            attn_mask=attn_mask,
            is_causal=is_causal,
            positions=positions,
            q_start=q_start,
            need_weights=need_weights or recording,
        )
        if recording:
            self.recorder(q=q, k=k, v=v, weights=weights)
        batch, _, q_len, _ = out.shape
        out = self.out_proj(out.transpose(1, 2).reshape(batch, q_len, -1))  # (B, Tq, D)
        return (out, weights) if need_weights else out

    def attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        key_padding_mask: Tensor | None,
        attn_mask: Tensor | None,
        is_causal: bool,
        positions: PositionalEncoding | None,
        q_start: int,
        need_weights: bool,
    ) -> tuple[Tensor, Tensor | None]:
        """Mix v (B, Hkv, Tk, Dh) by q (B, H, Tq, Dh) and k; subclasses replace this step."""
        mask = score_mask(q, k, key_padding_mask, attn_mask, positions, q_start)
        result = scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0,
            backend=self.backend,
            strict=self.strict,
            return_weights=need_weights,
        )
        return result if need_weights else (result, None)


def score_mask(
    q: Tensor,
    k: Tensor,
    key_padding_mask: Tensor | None,
    attn_mask: Tensor | None,
    positions: PositionalEncoding | None,
    q_start: int,
) -> Tensor | None:
    """One bool mask or float bias for (B, H, Tq, Tk) scores from padding, an explicit mask and position bias."""
    mask = attn_mask
    if positions is not None:
        pos_bias = positions.bias(q.shape[2], k.shape[2], q_start=q_start, device=q.device, dtype=q.dtype)
        if pos_bias is not None:
            mask = _combine(mask, pos_bias.unsqueeze(0))  # (1, H, Tq, Tk)
    if key_padding_mask is not None:
        if key_padding_mask.shape != (k.shape[0], k.shape[2]):
            raise ValueError(
                f"key_padding_mask must be (B, Tk) = {(k.shape[0], k.shape[2])}, got {tuple(key_padding_mask.shape)}"
            )
        mask = _combine(mask, key_padding_mask[:, None, None, :].bool())  # (B, 1, 1, Tk)
    return mask


def _combine(mask: Tensor | None, other: Tensor) -> Tensor:
    """Combine two masks/biases: bool & bool stays bool, anything with a float becomes a float bias."""
    if mask is None:
        return other
    if mask.dtype == torch.bool and other.dtype == torch.bool:
        return mask & other
    dtype = mask.dtype if mask.dtype != torch.bool else other.dtype
    return _as_bias(mask, dtype) + _as_bias(other, dtype)


def _as_bias(mask: Tensor, dtype: torch.dtype) -> Tensor:
    if mask.dtype != torch.bool:
        return mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))
