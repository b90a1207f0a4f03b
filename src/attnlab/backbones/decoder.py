"""Pre-norm transformer decoder: causal self-attention, cross-attention to an encoder's output, feed-forward.

The stack behind translation / summarization heads. All attention math comes from `attnlab.attention`;
incremental decoding keeps one `KVCache` per layer and attention kind in a `DecoderCache`.

Shape legend: B batch, T target tokens of this call, L target tokens so far (cached + this call),
S memory (source) tokens, D width, H heads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.attention import KVCache, MultiHeadAttention, PositionalEncoding, build_positional_encoding
from attnlab.backbones.transformer import FeedForward, LayerScale, init_weights

AttentionFactory = Callable[..., nn.Module]  # called as factory(dim=D, num_heads=H)

# 1-D encodings that work under a causal mask with a KV cache (axial RoPE needs a whole image grid).
DECODER_POSITIONAL_ENCODINGS: tuple[str, ...] = ("none", "sinusoidal", "learned", "relative", "alibi", "rope")


@dataclass
class DecoderCache:
    """Incremental-decoding state of a `TransformerDecoder`.

    Holds, per layer, a self-attention `KVCache` (grows by each call's tokens) and a cross-attention
    `KVCache` (filled once from the memory, then reused), plus the padding masks those keys need.
    `reorder` and `repeat_interleave` act in place on every tensor (beam search) and return self.
    """

    self_attn: list[KVCache]
    cross_attn: list[KVCache]
    self_mask: Tensor | None = None  # (B, L) bool, True = real target token; None while every token is real
    memory_mask: Tensor | None = None  # (B, S) bool, True = real memory token; None = no memory padding

    @classmethod
    def empty(cls, depth: int) -> DecoderCache:
        """A cache for `depth` layers holding nothing yet (the first decoder call fills it)."""
        return cls(self_attn=[KVCache() for _ in range(depth)], cross_attn=[KVCache() for _ in range(depth)])

    @property
    def length(self) -> int:
        """Target tokens decoded so far: the position of the next token."""
        return self.self_attn[0].length if self.self_attn else 0

    @property
    def has_memory(self) -> bool:
        """Whether the cross-attention keys/values of the memory are cached already."""
        return bool(self.cross_attn) and self.cross_attn[0].length > 0

    def _tensors(self) -> list[Tensor]:
        caches = [*self.self_attn, *self.cross_attn]
        tensors = [t for c in caches for t in (c.k, c.v) if t is not None]
        return tensors + [m for m in (self.self_mask, self.memory_mask) if m is not None]

    @property
    def batch_size(self) -> int | None:
        """Rows held (None while empty)."""
        tensors = self._tensors()
        return tensors[0].shape[0] if tensors else None

    def reorder(self, indices: Tensor) -> DecoderCache:
        """Keep batch rows `indices` (N,) long in that order, repeats allowed (beam search); in place."""
        for cache in (*self.self_attn, *self.cross_attn):
            cache.select(indices)
        if self.self_mask is not None:
            self.self_mask = self.self_mask.index_select(0, indices)  # (N, L)
        if self.memory_mask is not None:
            self.memory_mask = self.memory_mask.index_select(0, indices)  # (N, S)
        return self

    def repeat_interleave(self, repeats: int) -> DecoderCache:
        """Repeat every row `repeats` times in place: row b becomes rows b*n .. b*n + n - 1 (the beam layout)."""
        if repeats < 1:
            raise ValueError(f"repeats ({repeats}) must be >= 1 (e.g. the beam size)")
        tensors = self._tensors()
        if not tensors:
            return self  # nothing cached: the first call fills the cache at whatever batch size it gets
        rows = torch.arange(tensors[0].shape[0], device=tensors[0].device)
        return self.reorder(rows.repeat_interleave(repeats))  # (B * repeats,)


class DecoderBlock(nn.Module):
    """x + self_attn(norm(x)) (causal), x + cross_attn(norm(x), memory), x + mlp(norm(x)); each branch
    optionally layer-scaled.

    Args:
        attention: factory ``(dim=, num_heads=) -> module`` for the causal self-attention (default
            `MultiHeadAttention`); it must accept ``is_causal``, ``positions`` and ``cache``.
        cross_attention: factory for the cross-attention (default ``MultiHeadAttention(cross=True)``).
    """

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        attention: AttentionFactory | None = None,
        cross_attention: AttentionFactory | None = None,
        layer_scale_init: float | None = None,
    ) -> None:
        super().__init__()
        attention = attention or MultiHeadAttention
        cross_attention = cross_attention or partial(MultiHeadAttention, cross=True)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attn = attention(dim=dim, num_heads=num_heads)
        self.scale1 = LayerScale(dim, layer_scale_init)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.cross_attn = cross_attention(dim=dim, num_heads=num_heads)
        if not getattr(self.cross_attn, "cross", False):
            raise ValueError(
                f"cross_attention built {type(self.cross_attn).__name__} without cross=True; "
                "give a cross-attention factory, e.g. partial(MultiHeadAttention, cross=True)"
            )
        if getattr(self.self_attn, "cross", False):
            raise ValueError(
                "attention must build self-attention (cross=False); pass cross modules as cross_attention"
            )
        self.scale2 = LayerScale(dim, layer_scale_init)
        self.norm3 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FeedForward(dim=dim, hidden_dim=int(dim * mlp_ratio), dropout=dropout)
        self.scale3 = LayerScale(dim, layer_scale_init)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None,
        *,
        memory_mask: Tensor | None = None,
        self_mask: Tensor | None = None,
        positions: PositionalEncoding | None = None,
        self_cache: KVCache | None = None,
        cross_cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """x (B, T, D), memory (B, S, D) (None when `cross_cache` holds it) -> (x (B, T, D),
        self weights (B, H, T, L) | None, cross weights (B, H, T, S) | None).

        self_mask (B, L) covers cached and new target keys; memory_mask (B, S); both True = real token.
        """
        # a single new query may see every cached key: no causal mask to build
        causal = x.shape[1] > 1
        out = self.self_attn(
            self.norm1(x),
            key_padding_mask=self_mask,
            is_causal=causal,
            positions=positions,
            cache=self_cache,
            need_weights=need_weights,
        )
        out, self_weights = out if need_weights else (out, None)
        x = x + self.scale1(self.drop(out))  # (B, T, D)
        out = self.cross_attn(
            self.norm2(x),
            context=memory,
            key_padding_mask=memory_mask,
            cache=cross_cache,
            need_weights=need_weights,
        )
        out, cross_weights = out if need_weights else (out, None)
        x = x + self.scale2(self.drop(out))  # (B, T, D)
        x = x + self.scale3(self.mlp(self.norm3(x)))
        return x, self_weights, cross_weights


class TransformerDecoder(nn.Module):
    """Stack of pre-norm decoder blocks: target tokens attend causally to themselves and to a memory.

    Contract: ``forward(tokens (B, T, D), memory (B, S, D), memory_mask=(B, S) bool, padding_mask=(B, T)
    bool, cache=DecoderCache | None) -> hidden (B, T, D)``, masks True for real tokens. Without a cache the
    whole target is processed under a causal mask (teacher forcing); with one (`new_cache()`), each call
    appends its tokens to the cached prefix and positions continue at ``cache.length``.

    Args:
        dim: model width D (tokens and memory).
        depth: number of blocks.
        num_heads: attention heads per block (self and cross).
        mlp_ratio: feed-forward hidden width as a multiple of D.
        dropout: dropout on residual branches.
        attention: factory ``(dim=, num_heads=) -> module`` for causal self-attention (a Hydra ``_partial_``);
            default `MultiHeadAttention`. Incremental decoding needs a variant with a KV cache.
        cross_attention: factory for cross-attention; default ``MultiHeadAttention(cross=True)``.
        pos_encoding: one of `DECODER_POSITIONAL_ENCODINGS` (none, sinusoidal, learned, relative, alibi, rope);
            it positions the target only (the memory carries the encoder's positions).
        pos_encoding_options: constructor options of that encoding; ``relative`` defaults to
            ``bidirectional: false`` (T5's decoder: keys after the query never count under a causal mask).
        max_len: longest target the positional encoding supports (sinusoidal, learned).
        layer_scale_init: if set, every residual branch starts scaled by this learned per-channel factor.
    """

    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        attention: AttentionFactory | None = None,
        cross_attention: AttentionFactory | None = None,
        pos_encoding: str = "none",
        pos_encoding_options: Mapping[str, Any] | None = None,
        max_len: int = 4096,
        layer_scale_init: float | None = None,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"decoder depth ({depth}) must be >= 1")
        if pos_encoding not in DECODER_POSITIONAL_ENCODINGS:
            raise ValueError(
                f"decoder pos_encoding='{pos_encoding}' is not a 1-D causal encoding; "
                f"choose one of {', '.join(DECODER_POSITIONAL_ENCODINGS)}"
            )
        options = dict(pos_encoding_options or {})
        if pos_encoding == "relative":
            options.setdefault("bidirectional", False)
        try:
            self.positions = build_positional_encoding(
                pos_encoding, dim=dim, num_heads=num_heads, max_len=max_len, **options
            )
        except TypeError as err:
            raise ValueError(
                f"decoder pos_encoding_options {options} do not fit pos_encoding='{pos_encoding}' ({err}); "
                "remove or rename them"
            ) from err
        self.dim, self.depth, self.num_heads = dim, depth, num_heads
        self.blocks = nn.ModuleList(
            DecoderBlock(
                dim=dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                dropout=dropout,
                attention=attention,
                cross_attention=cross_attention,
                layer_scale_init=layer_scale_init,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.apply(init_weights)

    def new_cache(self) -> DecoderCache:
        """An empty cache for incremental decoding with this decoder."""
        return DecoderCache.empty(self.depth)

    def forward(
        self,
        tokens: Tensor,
        memory: Tensor | None,
        *,
        memory_mask: Tensor | None = None,
        padding_mask: Tensor | None = None,
        cache: DecoderCache | None = None,
        need_weights: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """hidden (B, T, D); with ``need_weights`` also every layer's cross-attention weights (B, H, T, S).

        See `forward_features` for the arguments.
        """
        hidden, _, _, cross_weights = self.forward_features(
            tokens,
            memory,
            memory_mask=memory_mask,
            padding_mask=padding_mask,
            cache=cache,
            need_weights=need_weights,
        )
        return (hidden, cross_weights) if need_weights else hidden

    def forward_features(
        self,
        tokens: Tensor,
        memory: Tensor | None,
        *,
        memory_mask: Tensor | None = None,
        padding_mask: Tensor | None = None,
        cache: DecoderCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, list[Tensor], list[Tensor], list[Tensor]]:
        """Decode target tokens against a memory.

        Args:
            tokens: (B, T, D) embedded target tokens (T = 1 per step when decoding with a cache).
            memory: (B, S, D) encoder output. With a cache it is read on the first call only (its keys and
                values are cached); later calls may pass None.
            memory_mask: (B, S) bool, True = real memory token. With a cache it is stored on the first call
                and reused (and reordered) afterwards; later values are ignored.
            padding_mask: (B, T) bool, True = real target token; with a cache it is appended to the mask of
                the cached tokens.
            cache: `DecoderCache` from `new_cache()`; updated in place.
            need_weights: also return attention weights (runs the reference attention path).

        Returns:
            (final hidden (B, T, D), every block's output (B, T, D), every block's self-attention weights
            (B, H, T, L), every block's cross-attention weights (B, H, T, S)); the weight lists are empty
            unless ``need_weights``.
        """
        if tokens.dim() != 3 or tokens.shape[-1] != self.dim:
            raise ValueError(f"decoder tokens must be (B, T, dim={self.dim}), got {tuple(tokens.shape)}")
        batch, length, _ = tokens.shape
        if padding_mask is not None and padding_mask.shape != (batch, length):
            raise ValueError(
                f"padding_mask must be (B, T) = {(batch, length)}, got {tuple(padding_mask.shape)}"
            )
        if cache is not None:
            if len(cache.self_attn) != self.depth or len(cache.cross_attn) != self.depth:
                raise ValueError(
                    f"cache has {len(cache.self_attn)} layers, the decoder {self.depth}; build it with decoder.new_cache()"
                )
            if cache.batch_size not in (None, batch):
                raise ValueError(
                    f"cache holds {cache.batch_size} rows but tokens have {batch}; expand it with "
                    "cache.repeat_interleave(beams) or select rows with cache.reorder(indices)"
                )
        reads_memory = cache is None or not cache.has_memory
        if reads_memory:
            memory_mask = self._check_memory(memory, memory_mask, batch)
            if cache is not None:
                cache.memory_mask = memory_mask
        else:
            memory, memory_mask = None, cache.memory_mask  # cross-attention reuses the cached keys/values
        start = 0 if cache is None else cache.length
        self_mask = (
            padding_mask if cache is None else _grow_mask(cache, padding_mask, batch, length, tokens.device)
        )

        x = self.positions.embed(tokens, start=start)  # (B, T, D), positions start..start+T
        states, self_weights, cross_weights = [], [], []
        for index, block in enumerate(self.blocks):
            x, block_self, block_cross = block(
                x,
                memory,
                memory_mask=memory_mask,
                self_mask=self_mask,
                positions=self.positions,
                self_cache=None if cache is None else cache.self_attn[index],
                cross_cache=None if cache is None else cache.cross_attn[index],
                need_weights=need_weights,
            )
            states.append(x)
            if need_weights:
                self_weights.append(block_self)  # (B, H, T, L)
                cross_weights.append(block_cross)  # (B, H, T, S)
        return self.norm(x), states, self_weights, cross_weights

    def _check_memory(self, memory: Tensor | None, memory_mask: Tensor | None, batch: int) -> Tensor | None:
        """Validate memory (B, S, D) and its mask; returns the mask as bool (B, S) or None."""
        if memory is None:
            raise ValueError("memory (B, S, D) is required unless the decoder cache already holds it")
        if memory.dim() != 3 or memory.shape[0] != batch:
            raise ValueError(
                f"memory must be (B={batch}, S, D), got {tuple(memory.shape)}; with beams, expand it with "
                "memory.repeat_interleave(beam_size, dim=0)"
            )
        if memory_mask is None:
            return None
        if memory_mask.shape != memory.shape[:2]:
            raise ValueError(
                f"memory_mask must be (B, S) = {tuple(memory.shape[:2])}, got {tuple(memory_mask.shape)}"
            )
        return memory_mask.bool()


def _grow_mask(
    cache: DecoderCache, padding_mask: Tensor | None, batch: int, length: int, device: torch.device
) -> Tensor | None:
    """Append this call's target padding mask (B, T) to the cached one; returns (B, L) bool or None."""
    if padding_mask is None and cache.self_mask is None:
        return None  # every target token so far is real
    past = cache.self_mask
    if past is None:
        past = torch.ones(batch, cache.length, dtype=torch.bool, device=device)  # (B, L - T)
    new = (
        torch.ones(batch, length, dtype=torch.bool, device=device)
        if padding_mask is None
        else padding_mask.bool()
    )
    cache.self_mask = torch.cat([past, new], dim=1)  # (B, L)
    return cache.self_mask
