"""Pre-norm transformer encoder: the shared attention backbone of every token task."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.attention import AxialRotaryPositionalEncoding, MultiHeadAttention, build_positional_encoding
from attnlab.backbones.features import take_indices

AttentionFactory = Callable[..., nn.Module]  # called as factory(dim=D, num_heads=H)
BlockBias = Callable[[int, Tensor], Tensor]  # (block index, normed block input (B, N, D)) -> mask/bias (B, H, N, N)


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
        self,
        x: Tensor,
        *,
        mask: Tensor | None,
        positions: nn.Module,
        need_weights: bool = False,
        attn_bias: Callable[[Tensor], Tensor] | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, N, D) -> (x', weights (B, H, N, N) | None); ``attn_bias(norm1(x))`` gives an extra bool mask
        or float bias broadcastable to (B, H, N, N) that may depend on this block's input."""
        normed = self.norm1(x)
        attn_mask = None if attn_bias is None else attn_bias(normed)
        attn_out = self.attn(
            normed, key_padding_mask=mask, attn_mask=attn_mask, positions=positions, need_weights=need_weights
        )
        attn_out, weights = attn_out if need_weights else (attn_out, None)
        x = x + self.scale1(self.drop(attn_out))
        x = x + self.scale2(self.mlp(self.norm2(x)))
        return x, weights


class TransformerEncoder(nn.Module):
    """Stack of pre-norm encoder blocks over token sequences.

    Contract: ``forward(tokens (B, N, D), mask (B, N) bool | None) -> hidden (B, N, D)``, mask True
    for real tokens. ``attn_bias(block_index, normed_block_input)`` optionally adds a per-block bool mask
    or float bias (B, H, N, N) computed from that block's input (a route's data-dependent bias, e.g.
    forgetting gates over sentence memories). Attention type and positional encoding are configuration.
    Intermediate block outputs come from `forward_intermediates` (segmentation pyramids, probing) or
    `forward_features` (every state plus attention maps, for analysis).

    Args:
        dim: model width D.
        depth: number of blocks.
        num_heads: attention heads per block.
        mlp_ratio: feed-forward hidden width as a multiple of D.
        dropout: dropout on residual branches.
        attention: factory ``(dim=, num_heads=) -> module`` (a Hydra ``_partial_``); default SDPA
            multi-head attention.
        pos_encoding: name in `attnlab.attention.POSITIONAL_ENCODINGS` (none, sinusoidal, learned, ...).
        pos_encoding_options: extra constructor arguments of that encoding, e.g. ``{grid: [4, 2, 3]}``
            for rope3d over a (T, H, W) = 4x2x3 token grid (otherwise inferred as a square/cube), or
            ``{base: 500000.0}`` for rope. A grid must match the sequence: N = prod(grid) + up to
            ``max_prefix`` (default 8) leading CLS/register tokens.
        max_len: longest sequence the positional encoding supports.
        layer_scale_init: if set, every residual branch is scaled by a learned per-channel factor
            starting at this value (e.g. 1e-2), so the stack starts near the identity and keeps token
            identity intact early in training; None disables it.
        weight_init: ``vit`` (timm's ViT: truncated normal, std 0.02) or ``xavier`` (Glorot uniform, as
            PyTorch's ``nn.Transformer``). Xavier starts narrow models (D ~ 128) with larger attention
            logits; on tasks that must learn to route information between tokens from scratch (bAbI QA)
            ViT's small init sits on a loss plateau for thousands of steps where Xavier escapes in
            hundreds (tasks/qa/README.md).
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
        pos_encoding_options: dict[str, Any] | None = None,
        max_len: int = 4096,
        layer_scale_init: float | None = None,
        weight_init: str = "vit",
    ) -> None:
        super().__init__()
        if weight_init not in WEIGHT_INITS:
            raise ValueError(f"backbone.weight_init='{weight_init}' is unknown; choose one of {sorted(WEIGHT_INITS)}")
        attention = attention or partial(MultiHeadAttention)
        self.dim, self.depth, self.num_heads = dim, depth, num_heads
        self.positions = _build_positions(
            pos_encoding, pos_encoding_options, dim=dim, num_heads=num_heads, max_len=max_len
        )
        self.blocks = nn.ModuleList(
            EncoderBlock(
                dim=dim, num_heads=num_heads, mlp_ratio=mlp_ratio, dropout=dropout, attention=attention,
                layer_scale_init=layer_scale_init,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.apply(WEIGHT_INITS[weight_init])

    def forward(self, tokens: Tensor, mask: Tensor | None = None, *, attn_bias: BlockBias | None = None) -> Tensor:
        hidden, _, _ = self.forward_features(tokens, mask, attn_bias=attn_bias)
        return hidden

    def forward_features(
        self,
        tokens: Tensor,
        mask: Tensor | None = None,
        *,
        need_weights: bool = False,
        attn_bias: BlockBias | None = None,
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Returns (final hidden (B, N, D), every block's output, every block's (B, H, N, N) weights)."""
        x = self._embed(tokens)  # (B, N, D)
        states, weights = [], []
        for index, block in enumerate(self.blocks):
            block_bias = None if attn_bias is None else partial(attn_bias, index)
            x, block_weights = block(
                x, mask=mask, positions=self.positions, need_weights=need_weights, attn_bias=block_bias
            )
            states.append(x)
            if block_weights is not None:
                weights.append(block_weights)
        return self.norm(x), states, weights

    def forward_intermediates(
        self,
        tokens: Tensor,
        mask: Tensor | None = None,
        *,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
    ) -> tuple[Tensor, list[Tensor]]:
        """Final hidden state plus selected block outputs, in timm's `forward_intermediates` convention.

        Args:
            tokens: (B, N, D) input tokens; mask: (B, N) bool, True for real tokens.
            indices: None -> every block; int n -> the last n blocks; a sequence -> those blocks in
                the order given (negative counts from the end, -1 is the last block).
            norm: pass each selected output through the final LayerNorm (the last one then equals
                `forward`).

        Returns:
            (final hidden (B, N, D) == forward(tokens, mask), list of (B, N, D) block outputs).
            `tokens_to_grid` turns each into a (B, D, H, W) map for a segmentation decoder.
        """
        taken = take_indices(self.depth, indices, what="blocks")
        wanted = set(taken)
        x = self._embed(tokens)  # (B, N, D)
        outputs: dict[int, Tensor] = {}
        for i, block in enumerate(self.blocks):
            x, _ = block(x, mask=mask, positions=self.positions)  # (B, N, D)
            if i in wanted:
                outputs[i] = self.norm(x) if norm else x
        return self.norm(x), [outputs[i] for i in taken]

    def _embed(self, tokens: Tensor) -> Tensor:
        """Check the sequence against an explicit positional grid, then add absolute positions."""
        if isinstance(self.positions, AxialRotaryPositionalEncoding) and self.positions.grid is not None:
            grid, length = self.positions.grid, tokens.shape[1]
            prefix = length - math.prod(grid)
            if not 0 <= prefix <= self.positions.max_prefix:
                raise ValueError(
                    f"backbone.pos_encoding_options.grid={list(grid)} holds {math.prod(grid)} tokens but the "
                    f"sequence has {length} (allowing up to {self.positions.max_prefix} leading prefix tokens); "
                    "set the grid to the adapter's token grid (e.g. frames/tubelet, rows, cols) or raise "
                    "backbone.pos_encoding_options.max_prefix"
                )
        return self.positions.embed(tokens)  # (B, N, D)


def _build_positions(
    kind: str, options: dict[str, Any] | None, *, dim: int, num_heads: int, max_len: int
) -> nn.Module:
    """`build_positional_encoding(kind, ..., **options)` with config-friendly options (lists -> tuples)."""
    options = dict(options or {})  # a Hydra DictConfig arrives here too
    if options.get("grid") is not None:
        options["grid"] = tuple(int(n) for n in options["grid"])  # [4, 2, 3] (YAML list) -> (4, 2, 3)
        axes = {"rope2d": 2, "rope3d": 3}.get(kind)
        if axes is not None and len(options["grid"]) != axes:
            raise ValueError(
                f"backbone.pos_encoding_options.grid={list(options['grid'])} must have {axes} sizes for "
                f"backbone.pos_encoding={kind} ({'(H, W)' if axes == 2 else '(T, H, W)'})"
            )
    try:
        return build_positional_encoding(kind, dim=dim, num_heads=num_heads, max_len=max_len, **options)
    except TypeError as err:  # an option the encoding's constructor does not take
        raise ValueError(
            f"backbone.pos_encoding_options={options} do not fit backbone.pos_encoding='{kind}' ({err}); "
            "remove the unknown keys or pick an encoding that takes them"
        ) from err


def xavier_init(module: nn.Module) -> None:
    """Glorot-uniform linear weights (PyTorch's nn.Transformer), zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def init_weights(module: nn.Module) -> None:
    """ViT-style initialisation: truncated-normal (std 0.02) linear weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


WEIGHT_INITS: dict[str, Callable[[nn.Module], None]] = {"vit": init_weights, "xavier": xavier_init}
