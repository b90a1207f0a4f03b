"""Massive values in queries and keys (Jin et al., ICML 2025, "Massive Values in Self-Attention
Modules are the Key to Contextual Knowledge Understanding").

Shape legend: B batch, H heads (Hkv for keys/values under GQA), T tokens, Dh head dim.

For each layer and each of Q, K (after RoPE) and V, the L2 norm over the sequence of every
(head, dimension) pair gives an (H, Dh) matrix M; an entry is *massive* when
``M[h, d] > lambda * mean_d M[h, :]`` (lambda = 5 in the paper). Over several sequences, M is the
mean of the per-sequence norms (padding excluded), so long and short sequences weigh the same and
the ratio to the head's mean does not depend on the sequence length.

With RoPE (`attnlab.attention.positional`), dims i and i + Dh/2 form a rotate-half pair turning at
frequency ``base ** (-2 i / Dh)`` radians per token (axial RoPE: the same within each axis's slice of
Dh). `rope_dimension_info` maps a dimension to its pair, frequency and band; the paper finds the
massive values in the low-frequency (slowly rotating) dims.

The ablation replaces chosen dims of q and k by their mean over the sequence, through the
`MultiHeadAttention.qkv_editor` hook (`attnlab.attention.capture.edit_qkv`): `mean_replace_editor`
builds the editor, `random_dims_like` the control with as many random dims.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from attnlab.attention.capture import QKVEditor
from attnlab.attention.positional import (
    AxialRotaryPositionalEncoding,
    PositionalEncoding,
    RotaryPositionalEncoding,
)

DEFAULT_LAMBDA = 5.0
BANDS = ("high", "mid", "low")  # by frequency: pair indices split in thirds, fastest rotation first


def dimension_norms(x: Tensor, token_mask: Tensor | None = None) -> Tensor:
    """(H, Dh) mean over the batch of each sequence's L2 norm over its valid tokens, for x (B, H, T, Dh)."""
    acc = DimensionNorms()
    acc.update(x, token_mask)
    return acc.compute()


class DimensionNorms:
    """Running mean over sequences of the per-(head, dim) L2 norm over each sequence's tokens."""

    def __init__(self) -> None:
        self.total: Tensor | None = None  # (H, Dh) float64
        self.count = 0

    def update(self, x: Tensor, token_mask: Tensor | None = None) -> None:
        """Add x (B, H, T, Dh); token_mask (B, T) True for real tokens (None: all)."""
        if not isinstance(x, Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must be a (B, H, T, Dh) query/key/value tensor, got {shape}")
        batch, _, length, _ = x.shape
        x = x.detach().double().cpu()
        if token_mask is not None:
            if tuple(token_mask.shape) != (batch, length):
                raise ValueError(
                    f"token_mask must be (B, T) = {(batch, length)} (True = real token), got {tuple(token_mask.shape)}"
                )
            x = x * token_mask.detach().cpu().to(x.dtype)[:, None, :, None]  # padded tokens add nothing
        norms = x.square().sum(dim=2).sqrt().sum(dim=0)  # (H, Dh): per-sequence norms, summed over B
        if self.total is None:
            self.total = torch.zeros_like(norms)
        elif self.total.shape != norms.shape:
            raise ValueError(f"x has (H, Dh) = {tuple(norms.shape)}, earlier updates had {tuple(self.total.shape)}")
        self.total += norms
        self.count += batch

    def compute(self) -> Tensor:
        if self.total is None:
            raise ValueError("DimensionNorms.compute() before any update(); feed it captured q, k or v first")
        return self.total / self.count  # (H, Dh)


def norm_ratio(norms: Tensor) -> Tensor:
    """(H, Dh) each entry's norm over its head's mean norm."""
    _check_norms(norms)
    return norms / norms.mean(dim=-1, keepdim=True).clamp(min=torch.finfo(norms.dtype).tiny)


def flag_massive(norms: Tensor, lam: float = DEFAULT_LAMBDA) -> Tensor:
    """(H, Dh) bool: entries of the norm matrix above ``lam`` times their head's mean norm."""
    if not lam > 0:
        raise ValueError(f"lambda ({lam}) must be > 0; the paper uses 5")
    return norm_ratio(norms) > lam


def _check_norms(norms: Tensor) -> None:
    if not isinstance(norms, Tensor) or norms.dim() != 2:
        shape = tuple(norms.shape) if isinstance(norms, Tensor) else type(norms).__name__
        raise ValueError(f"norms must be an (H, Dh) matrix from dimension_norms, got {shape}")


@dataclass(frozen=True)
class RopeDim:
    """Where one head dimension sits in the rotary encoding."""

    dim: int  # index in the head dim
    axis: int  # 0 for 1-D RoPE; the axis (0 = rows, 1 = cols, ...) for axial RoPE
    pair: int  # rotate-half pair index i within the axis's slice: dims i and i + part/2
    frequency: float  # radians per token (per grid step for axial RoPE): base ** (-2 i / part)
    wavelength: float  # tokens for one full turn: 2 pi / frequency
    band: str  # "high" | "mid" | "low": the pair's third of the frequency range (high rotates fastest)


def rope_dimension_info(positions: PositionalEncoding | None, head_dim: int) -> list[RopeDim] | None:
    """One `RopeDim` per head dimension for a rotary encoding; None for any other encoding."""
    if isinstance(positions, RotaryPositionalEncoding):
        axes, base = 1, positions.base
        if positions.head_dim != head_dim:
            raise ValueError(f"head_dim ({head_dim}) differs from the RoPE's head_dim ({positions.head_dim})")
    elif isinstance(positions, AxialRotaryPositionalEncoding):
        axes, base = positions.axes, positions.base
        if positions.head_dim != head_dim:
            raise ValueError(f"head_dim ({head_dim}) differs from the axial RoPE's head_dim ({positions.head_dim})")
    else:
        return None
    part = head_dim // axes  # each axis rotates its own slice of the head dim (`_rope_angles` per slice)
    pairs = part // 2
    info = []
    for dim in range(head_dim):
        axis, local = divmod(dim, part)
        pair = local % pairs  # `_rotate_half`: local dims i and i + part/2 share a frequency
        frequency = base ** (-2.0 * pair / part)
        info.append(
            RopeDim(
                dim=dim, axis=axis, pair=pair, frequency=frequency, wavelength=2 * math.pi / frequency,
                band=BANDS[min(3 * pair // pairs, 2)],
            )
        )
    return info


def rope_band_counts(flags: Tensor, info: list[RopeDim]) -> dict[str, int]:
    """Flagged entries of an (H, Dh) bool matrix per frequency band."""
    if flags.dim() != 2 or flags.shape[1] != len(info):
        raise ValueError(f"flags must be (H, Dh) with Dh = {len(info)} (the RoPE's head dim), got {tuple(flags.shape)}")
    per_dim = flags.sum(dim=0)  # (Dh,)
    counts = dict.fromkeys(BANDS, 0)
    for entry in info:
        counts[entry.band] += int(per_dim[entry.dim])
    return counts


def mean_replace_editor(
    *, q_dims: Tensor | None = None, k_dims: Tensor | None = None, v_dims: Tensor | None = None
) -> QKVEditor:
    """An editor for `edit_qkv` that replaces the chosen dims by their mean over the sequence.

    Args:
        q_dims: (H, Dh) bool, True where q[:, h, :, d] becomes its mean over the tokens; None: q unchanged.
        k_dims / v_dims: (Hkv, Dh) bool, the same for keys / values.

    The mean runs over every position the layer sees (padding included: the editor gets no mask);
    padded keys are masked out of the attention all the same.
    """
    for name, dims in (("q_dims", q_dims), ("k_dims", k_dims), ("v_dims", v_dims)):
        if dims is not None and (dims.dim() != 2 or dims.dtype != torch.bool):
            raise ValueError(f"{name} must be an (H, Dh) bool tensor, got {dims.dtype} {tuple(dims.shape)}")

    def replace(x: Tensor, dims: Tensor | None, name: str) -> Tensor:
        if dims is None:
            return x
        if tuple(dims.shape) != (x.shape[1], x.shape[3]):
            raise ValueError(f"{name} is {tuple(dims.shape)} but the layer's tensor has (H, Dh) = {(x.shape[1], x.shape[3])}")
        if not bool(dims.any()):
            return x
        mask = dims.to(x.device)[None, :, None, :]  # (1, H, 1, Dh)
        return torch.where(mask, x.mean(dim=2, keepdim=True).expand_as(x), x)  # (B, H, T, Dh)

    def editor(*, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return replace(q, q_dims, "q_dims"), replace(k, k_dims, "k_dims"), replace(v, v_dims, "v_dims")

    return editor


def random_dims_like(flags: Tensor, *, generator: torch.Generator) -> Tensor:
    """(H, Dh) bool with as many random dims per head as ``flags`` has, drawn among the unflagged ones.

    Matching counts per head keeps the control as concentrated as the real ablation; a head with
    more flags than unflagged dims draws from all of its dims.
    """
    if flags.dim() != 2 or flags.dtype != torch.bool:
        raise ValueError(f"flags must be an (H, Dh) bool tensor, got {flags.dtype} {tuple(flags.shape)}")
    chosen = torch.zeros_like(flags)
    for head in range(flags.shape[0]):
        count = int(flags[head].sum())
        if count == 0:
            continue
        pool = (~flags[head]).nonzero().flatten()
        if len(pool) < count:
            pool = torch.arange(flags.shape[1])
        pick = pool[torch.randperm(len(pool), generator=generator)[:count]]
        chosen[head, pick] = True
    return chosen
