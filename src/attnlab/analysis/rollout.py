"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").

A pre-norm block computes ``x + attn(x)``: the residual carries each token's own state past the
attention. Rollout models that by mixing each layer's head-averaged weights A (B, N, N) with the
identity, ``A' = r I + (1 - r) A`` with r = 0.5 (the paper's choice: residual and attention weigh
the same), renormalising the rows of A', and multiplying across layers, the last layer on the left:

    R = A'_L @ A'_{L-1} @ ... @ A'_1    (B, N, N)

Row i of R says how much of the final state of token i flows from each input token; every row sums
to 1 (a product of row-stochastic matrices), and identity attention rolls out to the identity.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

HEAD_FUSIONS = ("mean", "max", "min")


def attention_rollout(weights: Sequence[Tensor], *, residual: float = 0.5, head_fusion: str = "mean") -> Tensor:
    """Roll out self-attention weights through the layers.

    Args:
        weights: one (B, H, N, N) tensor per layer, the first layer first (e.g. the records of
            ``backbone.blocks.<i>.attn`` from `capture_attention`).
        residual: weight r of the identity (the residual path); 0 is plain attention products.
        head_fusion: how heads combine into one map per layer: ``mean`` (the paper), ``max`` or ``min``.

    Returns:
        (B, N, N) in the dtype of the inputs (computed in float64).
    """
    if len(weights) == 0:
        raise ValueError("attention_rollout needs the weights of at least one layer (got an empty sequence)")
    if not 0.0 <= residual <= 1.0:
        raise ValueError(f"residual ({residual}) must lie in [0, 1]; the paper uses 0.5")
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"head_fusion='{head_fusion}' is unknown; choose one of {', '.join(HEAD_FUSIONS)}")
    first = weights[0]
    if first.dim() != 4 or first.shape[-1] != first.shape[-2]:
        raise ValueError(f"rollout needs self-attention weights (B, H, N, N) per layer, got {tuple(first.shape)}")
    batch, _, length, _ = first.shape
    eye = torch.eye(length, dtype=torch.float64, device=first.device)  # (N, N)
    rollout = eye.expand(batch, length, length).clone()  # (B, N, N)
    for index, layer in enumerate(weights):
        if layer.dim() != 4 or layer.shape[0] != batch or layer.shape[-2:] != (length, length):
            raise ValueError(
                f"layer {index} weights are {tuple(layer.shape)}; every layer must be (B, H, N, N) = "
                f"({batch}, H, {length}, {length})"
            )
        fused = _fuse_heads(layer.detach().double(), head_fusion)  # (B, N, N)
        mixed = residual * eye + (1.0 - residual) * fused  # (B, N, N)
        mixed = mixed / mixed.sum(-1, keepdim=True).clamp(min=1e-300)  # rows sum to 1
        rollout = mixed @ rollout  # later layers on the left
    return rollout.to(first.dtype)


def _fuse_heads(layer: Tensor, head_fusion: str) -> Tensor:
    """(B, H, N, N) -> (B, N, N)."""
    if head_fusion == "mean":
        return layer.mean(1)
    return layer.amax(1) if head_fusion == "max" else layer.amin(1)
