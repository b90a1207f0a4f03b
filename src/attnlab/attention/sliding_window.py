"""Sliding-window (local) attention with optional global tokens, Longformer style.

Query i attends key j when |i - j| <= window (causal: 0 <= i - j <= window). The first
``num_global`` tokens are global: they attend to every key and every query attends to them.

Two implementations of the same math, memory O(n * w):
- ``chunked``: queries in blocks of c tokens, each block attends to its c + 2w neighbouring keys
  (plus the global keys) through the fused SDPA kernels, a few blocks per call; blocks whose window
  lies inside the sequence share one (c, c + 2w) mask; runs anywhere.
- ``flex``: one FlexAttention call with a block-sparse mask (compiled; CUDA by default).

Shape legend: B batch, H query heads, Hkv key/value heads, n tokens, Dh head dim, c block size.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from attnlab.attention.multihead import MultiHeadAttention, score_mask
from attnlab.attention.positional import PositionalEncoding
from attnlab.attention.sdpa import Backend, reference_attention, scaled_dot_product_attention

Impl = Literal["auto", "chunked", "flex"]
_CALL_BYTES = 8 * 2**20  # key (or value) window bytes per kernel call of the chunked path


def sliding_window_mask(
    length: int, *, window: int, num_global: int = 0, is_causal: bool = False, device=None
) -> Tensor:
    """Dense (n, n) bool mask of the sliding-window pattern, True = may attend (O(n^2); for tests/maps)."""
    pos = torch.arange(length, device=device)
    offset = pos[:, None] - pos[None, :]  # (n, n): query minus key
    allowed = offset.abs() <= window
    allowed |= (pos[None, :] < num_global) | (pos[:, None] < num_global)
    if is_causal:
        allowed &= offset >= 0
    return allowed


def sliding_window_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    window: int,
    num_global: int = 0,
    is_causal: bool = False,
    key_padding_mask: Tensor | None = None,
    positions: PositionalEncoding | None = None,
    block_size: int | None = None,
    dropout_p: float = 0.0,
    backend: Backend = "auto",
    strict: bool = True,
) -> Tensor:
    """Chunked sliding-window self-attention: q (B, H, n, Dh), k, v (B, Hkv, n, Dh) -> (B, H, n, Dh).

    Args:
        window: keys each query sees on each side (w).
        num_global: leading tokens that attend and are attended globally.
        key_padding_mask: (B, n) bool, True for real tokens.
        positions: its `bias` hook must depend only on key-query offsets (relative, ALiBi).
        block_size: query block c; default max(64, w) capped at n. Memory ~ n * (c + 2w + globals).
    """
    batch, heads, length, head_dim = q.shape
    kv_heads, value_dim = k.shape[1], v.shape[-1]
    window = min(window, length - 1)
    num_global = min(num_global, length)
    block = min(length, block_size or max(64, window))
    device = q.device
    if window == length - 1 or block == length:  # full attention, or one block (n <= c): one call
        full = window == length - 1
        mask = None if full else sliding_window_mask(length, window=window, num_global=num_global, device=device)
        if key_padding_mask is not None:
            real = key_padding_mask[:, None, None, :].bool()  # (B, 1, 1, n)
            mask = real if mask is None else mask & real
        bias = None if positions is None else positions.bias(length, length, device=device, dtype=q.dtype)
        if bias is not None:
            mask = bias if mask is None else torch.where(mask, bias, float("-inf"))
        return scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=dropout_p, backend=backend, strict=strict
        )
    num_blocks = math.ceil(length / block)
    padded = num_blocks * block
    span = block + window + (0 if is_causal else window)  # keys per block: [start - w, end + w)

    # block views, no copies yet: queries (B, nb, H, c, Dh), key/value windows (B, nb, Hkv, span, d)
    q_padded = q if padded == length else F.pad(q, (0, 0, 0, padded - length))
    q_blocks = q_padded.unflatten(2, (num_blocks, block)).transpose(1, 2)

    def windows(x: Tensor) -> Tensor:
        right = padded - length + (0 if is_causal else window)
        return F.pad(x, (0, 0, window, right)).unfold(2, span, block).permute(0, 2, 1, 4, 3)

    k_blocks, v_blocks = windows(k), windows(v)

    # (query r in block, key t in span) may attend: key pos = block start - w + t, query pos = start + r
    r = torch.arange(block, device=device)[:, None]
    t = torch.arange(span, device=device)[None, :]
    band = (t >= r) & (t <= r + (window if is_causal else 2 * window))  # (c, span), the same in every block
    starts = torch.arange(num_blocks, device=device) * block  # (nb,)
    key_pos = starts[:, None] - window + torch.arange(span, device=device)  # (nb, span)
    key_ok = (key_pos >= 0) & (key_pos < length)  # (nb, span)
    bias = None
    if positions is not None:
        bias = positions.bias(block, span, q_start=window, k_start=0, device=device, dtype=q.dtype)
        bias = None if bias is None else bias[None]  # (1, H | 1, c, span), the same in every block

    real_windows = None  # (B, nb, span): which keys of each block's window are real tokens
    if key_padding_mask is not None:
        real = F.pad(key_padding_mask.bool(), (window, padded - length + window), value=False)  # (B, n + 2w)
        real_windows = real.unfold(1, span, block)
    global_bias = None  # (1, nb, H | 1, c, g): score bias of every block's queries to the global keys
    if bias is not None and num_global > 0:
        global_bias = positions.bias(padded, num_global, device=device, dtype=q.dtype)  # (H | 1, padded, g)
        global_bias = global_bias.view(global_bias.shape[0], num_blocks, block, num_global).transpose(0, 1)[None]

    def block_masks(first: int, stop: int) -> Tensor:
        """Mask (B | 1, m, 1 | H, c, K) of blocks [first, stop): band, keys inside the sequence, globals."""
        mask = band[None] & key_ok[first:stop, None, :]  # (m, c, span)
        if real_windows is not None:
            mask = mask[None] & real_windows[:, first:stop, None, :]  # (B, m, c, span)
        else:
            mask = mask[None]  # (1, m, c, span)
        if num_global > 0:  # every query also sees the global keys that its window does not cover
            q_pos = starts[first:stop, None] + r.T  # (m, c)
            g_pos = torch.arange(num_global, device=device)
            extra = g_pos[None, None, :] < q_pos[..., None] - window  # (m, c, g) left of the window
            if not is_causal:
                extra |= g_pos[None, None, :] > q_pos[..., None] + window
            if key_padding_mask is not None:
                extra = extra[None] & key_padding_mask[:, None, None, :num_global].bool()  # (B, m, c, g)
            else:
                extra = extra[None]
            mask = torch.cat([extra.expand(mask.shape[0], -1, -1, -1), mask], dim=-1)  # (B | 1, m, c, g + span)
        mask = mask.unsqueeze(2)  # (B | 1, m, 1, c, K)
        if bias is None:
            return mask
        block_bias = bias[None].expand(1, stop - first, *bias.shape[1:])  # (1, m, H | 1, c, span)
        if global_bias is not None:
            g_bias = global_bias[:, first:stop]
            heads_b = max(block_bias.shape[2], g_bias.shape[2])
            block_bias = torch.cat(
                [g_bias.expand(1, stop - first, heads_b, block, num_global),
                 block_bias.expand(1, stop - first, heads_b, block, span)],
                dim=-1,
            )  # (1, m, H | 1, c, g + span)
        return torch.where(mask, block_bias, float("-inf"))

    def attend(q_part: Tensor, k_part: Tensor, v_part: Tensor, attn_mask: Tensor) -> Tensor:
        """m blocks (B, m, H, c, Dh), (B, m, Hkv, span, d) -> (B, m, H, c, Dv); attn_mask broadcasts to (B, m, H, c, K)."""
        m = q_part.shape[1]
        if num_global > 0:  # the global keys/values lead every block's window
            k_part, v_part = (
                torch.cat([x[:, :, :num_global].unsqueeze(1).expand(-1, m, -1, -1, -1), w], dim=3)
                for x, w in ((k, k_part), (v, v_part))
            )
        if attn_mask.dim() == 5:  # per-block masks: fold the block axis into the batch with the inputs
            attn_mask = attn_mask.expand(batch, m, *attn_mask.shape[2:]).reshape(batch * m, *attn_mask.shape[2:])
        out = scaled_dot_product_attention(
            *(x.reshape(batch * m, *x.shape[2:]) for x in (q_part, k_part, v_part)),
            attn_mask=attn_mask, dropout_p=dropout_p, backend=backend, strict=strict,
        )  # (B * m, H, c, Dv)
        return out.view(batch, m, heads, block, value_dim)

    # Blocks whose window lies inside the sequence share one (c, span) mask: one broadcast mask, no
    # per-block copy (the common case: no padding, no global tokens). The edge blocks keep their own.
    first_inner = min(num_blocks, math.ceil(window / block))
    stop_inner = num_blocks if is_causal else max(first_inner, min(num_blocks, (length - window) // block))
    shared = key_padding_mask is None and num_global == 0 and stop_inner > first_inner
    segments = [(0, num_blocks)]
    if shared:
        segments = [(a, b) for a, b in ((0, first_inner), (first_inner, stop_inner), (stop_inner, num_blocks)) if b > a]
    # a few blocks per kernel call: each call's key/value windows (3x their keys at w = c) stay small,
    # in cache and in the allocator's heap, instead of one copy of every window at once
    window_bytes = batch * max(heads, kv_heads) * span * max(head_dim, value_dim) * q.element_size()
    per_call = max(1, _CALL_BYTES // window_bytes)
    segments = [
        (start, min(start + per_call, stop)) for first, stop in segments for start in range(first, stop, per_call)
    ]
    sizes = [stop - first for first, stop in segments]
    # split, not slicing: a slice's backward writes a zero-filled gradient of the whole input per segment
    parts = zip(*(x.split(sizes, dim=1) for x in (q_blocks, k_blocks, v_blocks)))
    inner_mask = None
    if shared:
        inner_mask = band if bias is None else torch.where(band, bias, float("-inf"))  # (c, span) | (1, H | 1, c, span)
    pieces = []
    for (first, stop), (q_part, k_part, v_part) in zip(segments, parts):
        inner = shared and first_inner <= first and stop <= stop_inner
        pieces.append(attend(q_part, k_part, v_part, inner_mask if inner else block_masks(first, stop)))
    if len(pieces) > 1:  # one copy, straight into (B, H, nb, c, Dv)
        out = torch.cat([piece.transpose(1, 2) for piece in pieces], dim=2).flatten(2, 3)
    else:  # a view when the kernel wrote token-major memory (torch's CPU flash does for token-major q)
        out = pieces[0].transpose(1, 2).reshape(batch, heads, padded, value_dim)
    out = out[:, :, :length]  # (B, H, n, Dv)

    if num_global > 0:  # global queries attend to every (earlier, when causal) key
        g_mask = _global_rows_mask(length, num_global, is_causal, device)  # (g, n)
        g_mask = g_mask if key_padding_mask is None else g_mask & key_padding_mask[:, None, None, :].bool()
        if positions is not None:
            g_bias = positions.bias(num_global, length, device=device, dtype=q.dtype)
            if g_bias is not None:
                g_mask = torch.where(g_mask, g_bias, float("-inf"))
        g_out = scaled_dot_product_attention(
            q[:, :, :num_global], k, v, attn_mask=g_mask, dropout_p=dropout_p, backend=backend, strict=strict
        )
        out = torch.cat([g_out, out[:, :, num_global:]], dim=2)
    return out


def _global_rows_mask(length: int, num_global: int, is_causal: bool, device) -> Tensor:
    rows = torch.arange(num_global, device=device)[:, None]
    cols = torch.arange(length, device=device)[None, :]
    return cols <= rows if is_causal else torch.ones(num_global, length, dtype=torch.bool, device=device)


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_sliding_window_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    window: int,
    num_global: int = 0,
    is_causal: bool = False,
    key_padding_mask: Tensor | None = None,
) -> Tensor:
    """Sliding-window attention as one compiled FlexAttention call with a block-sparse mask."""
    from torch.nn.attention.flex_attention import create_block_mask

    batch, _, length, _ = q.shape
    real = key_padding_mask.bool() if key_padding_mask is not None else None

    def mask_mod(b, h, q_idx, kv_idx):
        allowed = ((q_idx - kv_idx).abs() <= window) | (kv_idx < num_global) | (q_idx < num_global)
        if is_causal:
            allowed = allowed & (kv_idx <= q_idx)
        if real is not None:
            allowed = allowed & real[b, kv_idx]
        return allowed

    block_mask = create_block_mask(
        mask_mod, batch if real is not None else None, None, length, length, device=q.device.type
    )
    return _compiled_flex()(q, k, v, block_mask=block_mask, enable_gqa=k.shape[1] != q.shape[1])


class SlidingWindowAttention(MultiHeadAttention):
    """Multi-head self-attention restricted to a sliding window plus optional global tokens.

    Args:
        window: keys each query sees on each side (``attention.window``); w >= n is full attention.
        num_global: leading global tokens (CLS, question tokens in QA) (``attention.num_global``).
        impl: ``chunked`` (blocks over fused SDPA, any device), ``flex`` (compiled FlexAttention,
            no position bias), ``auto`` (flex on CUDA without bias, else chunked).
        block_size: query block of the chunked path; default max(64, window).
        others: as `MultiHeadAttention`; self-attention only, no KV cache. An explicit ``attn_mask``
            (bool or float bias) is applied inside the band on the dense path (memory quadratic in length).
    """

    supports_cache = False

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        window: int = 256,
        num_global: int = 0,
        impl: Impl = "auto",
        block_size: int | None = None,
        num_kv_heads: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        backend: Backend = "auto",
        strict: bool = True,
    ) -> None:
        super().__init__(
            dim=dim,
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            bias=bias,
            dropout=dropout,
            backend=backend,
            strict=strict,
        )
        if window < 0:
            raise ValueError(f"attention.window must be >= 0, got {window}")
        if num_global < 0:
            raise ValueError(f"attention.num_global must be >= 0, got {num_global}")
        if impl not in ("auto", "chunked", "flex"):
            raise ValueError(f"attention.impl='{impl}' is unknown; choose auto, chunked or flex")
        self.window, self.num_global, self.impl, self.block_size = window, num_global, impl, block_size

    def attend(self, q, k, v, *, key_padding_mask, attn_mask, is_causal, positions, q_start, need_weights):
        length = q.shape[2]
        dropout_p = self.dropout if self.training else 0.0
        if need_weights or attn_mask is not None:
            # dense: exact maps through the reference path, or the band within a caller's (already dense)
            # mask or score bias (e.g. a route's forgetting bias); only the mask-free path is linear in length
            band = sliding_window_mask(
                length, window=self.window, num_global=self.num_global, is_causal=is_causal, device=q.device
            )
            if attn_mask is not None:
                band = band & attn_mask if attn_mask.dtype == torch.bool else attn_mask.masked_fill(~band, float("-inf"))
            mask = score_mask(q, k, key_padding_mask, band, positions, q_start)
            if need_weights:
                return reference_attention(q, k, v, attn_mask=mask)
            out = scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout_p, backend=self.backend, strict=self.strict
            )
            return out, None
        has_bias = positions is not None and positions.bias(1, 1, device=q.device) is not None
        use_flex = self.impl == "flex" or (self.impl == "auto" and q.is_cuda and not has_bias and dropout_p == 0)
        if use_flex:
            if has_bias or dropout_p > 0:
                raise ValueError(
                    "attention.impl=flex supports neither position biases (relative, alibi) nor dropout; "
                    "use attention.impl=chunked"
                )
            out = flex_sliding_window_attention(
                q, k, v, window=self.window, num_global=self.num_global, is_causal=is_causal,
                key_padding_mask=key_padding_mask,
            )
            return out, None
        out = sliding_window_attention(
            q,
            k,
            v,
            window=self.window,
            num_global=self.num_global,
            is_causal=is_causal,
            key_padding_mask=key_padding_mask,
            positions=positions,
            block_size=self.block_size,
            dropout_p=dropout_p,
            backend=self.backend,
            strict=self.strict,
        )
        return out, None
