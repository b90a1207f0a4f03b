"""Pre-norm transformer encoder: the shared attention backbone of every token task."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from attnlab.attention import MultiHeadAttention, build_positional_encoding

AttentionFactory = Callable[..., nn.Module]  # called as factory(dim=D, num_heads=H)


class FeedForward(nn.Module):
    """Two-layer MLP with GELU, the transformer's position-wise feed-forward."""

    def __init__(self, *, dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class LayerScale(nn.Module):
    """Per-channel learned scale of a residual branch (Touvron et al. 2021, CaiT), initialised small so
    a deep stack starts close to the identity; ``init_value=None`` is a no-op."""

    def __init__(self, dim: int, init_value: float | None) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value))) if init_value is not None else None

    def forward(self, x: Tensor) -> Tensor:
        return x if self.gamma is None else x * self.gamma


class EncoderBlock(nn.Module):
    """x + attn(norm(x)), then x + mlp(norm(x)); each branch optionally layer-scaled."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        dropout: float,
        attention: AttentionFactory,
        layer_scale_init: float | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = attention(dim=dim, num_heads=num_heads)
        self.scale1 = LayerScale(dim, layer_scale_init)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FeedForward(dim=dim, hidden_dim=int(dim * mlp_ratio), dropout=dropout)
        self.scale2 = LayerScale(dim, layer_scale_init)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(
        self, x: Tensor, *, mask: Tensor | None, positions: nn.Module, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        attn_out = self.attn(self.norm1(x), key_padding_mask=mask, positions=positions, need_weights=need_weights)
        attn_out, weights = attn_out if need_weights else (attn_out, None)
        x = x + self.scale1(self.drop(attn_out))
        x = x + self.scale2(self.mlp(self.norm2(x)))
        return x, weights


class TransformerEncoder(nn.Module):
    """Stack of pre-norm encoder blocks over token sequences.

    Contract: ``forward(tokens (B, N, D), mask (B, N) bool | None) -> hidden (B, N, D)``, mask True
    for real tokens. Attention type and positional encoding are configuration.

    Args:
        dim: model width D.
        depth: number of blocks.
        num_heads: attention heads per block.
        mlp_ratio: feed-forward hidden width as a multiple of D.
        dropout: dropout on residual branches.
        attention: factory ``(dim=, num_heads=) -> module`` (a Hydra ``_partial_``); default SDPA
            multi-head attention.
        pos_encoding: name in `attnlab.attention.POSITIONAL_ENCODINGS` (none, sinusoidal, learned, ...).
        max_len: longest sequence the positional encoding supports.
        layer_scale_init: if set, every residual branch is scaled by a learned per-channel factor
            starting at this value (e.g. 1e-2), so the stack starts near the identity and keeps token
            identity intact early in training; None disables it.
    """

    takes_pixels = False  # consumes adapter tokens, not raw images

    def __init__(
        self,
        *,
        dim: int = 96,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        attention: AttentionFactory | None = None,
        pos_encoding: str = "none",
        max_len: int = 4096,
        layer_scale_init: float | None = None,
    ) -> None:
        super().__init__()
        attention = attention or partial(MultiHeadAttention)
        self.dim, self.depth, self.num_heads = dim, depth, num_heads
        self.positions = build_positional_encoding(pos_encoding, dim=dim, num_heads=num_heads, max_len=max_len)
        self.blocks = nn.ModuleList(
            EncoderBlock(
                dim=dim, num_heads=num_heads, mlp_ratio=mlp_ratio, dropout=dropout, attention=attention,
                layer_scale_init=layer_scale_init,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.apply(_init_weights)

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        hidden, _, _ = self.forward_features(tokens, mask)
        return hidden

    def forward_features(
        self, tokens: Tensor, mask: Tensor | None = None, *, need_weights: bool = False
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Returns (final hidden (B, N, D), every block's output, every block's (B, H, N, N) weights)."""
        x = self.positions.embed(tokens)
        states, weights = [], []
        for block in self.blocks:
            x, block_weights = block(x, mask=mask, positions=self.positions, need_weights=need_weights)
            states.append(x)
            if block_weights is not None:
                weights.append(block_weights)
        return self.norm(x), states, weights


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
