"""Positional encodings behind one interface the backbones and attention modules share.

A `PositionalEncoding` can act at three places; each default is a no-op:
- ``embed(x)``: absolute encodings added to the token sequence (sinusoidal, learned);
- ``rotate(q, k, q_start, k_start)``: rotations of queries/keys inside attention (RoPE);
- ``bias(q_len, k_len, ...)``: an additive score bias (ALiBi, relative position buckets).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn


class PositionalEncoding(nn.Module):
    """No positional information (the identity at all three hooks)."""

    def embed(self, x: Tensor, *, start: int = 0) -> Tensor:  # x: (B, N, D) at positions start..start+N
        return x

    def rotate(self, q: Tensor, k: Tensor, *, q_start: int = 0, k_start: int = 0) -> tuple[Tensor, Tensor]:
        return q, k  # (B, H, T, Dh)

    def bias(
        self, q_len: int, k_len: int, *, q_start: int = 0, k_start: int = 0, device=None, dtype=None
    ) -> Tensor | None:
        """Additive score bias (H | 1, Tq, Tk) for queries at q_start.. and keys at k_start.., or None."""
        return None


class SinusoidalPositionalEncoding(PositionalEncoding):
    """Fixed sin/cos absolute encoding of Vaswani et al. (2017), added to the tokens."""

    def __init__(self, *, dim: int, max_len: int = 4096, base: float = 10000.0) -> None:
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)  # (L, 1)
        freq = torch.exp(torch.arange(0, dim, 2) * (-math.log(base) / dim))  # (ceil(D/2),)
        table = torch.zeros(max_len, dim)
        table[:, 0::2] = torch.sin(position * freq)
        table[:, 1::2] = torch.cos(position * freq[: dim // 2])
        self.register_buffer("table", table, persistent=False)  # (L, D)

    def embed(self, x: Tensor, *, start: int = 0) -> Tensor:
        """x (B, N, D) plus the encodings of positions start..start+N (start > 0 when decoding with a cache)."""
        _check_length(start + x.shape[1], self.table.shape[0])
        return x + self.table[start : start + x.shape[1]].to(x.dtype)


class LearnedPositionalEncoding(PositionalEncoding):
    """Learned absolute position embeddings (BERT / ViT style), added to the tokens."""

    def __init__(self, *, dim: int, max_len: int = 4096, init_std: float = 0.02) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(max_len, dim) * init_std)  # (L, D)

    def embed(self, x: Tensor, *, start: int = 0) -> Tensor:
        """x (B, N, D) plus the embeddings of positions start..start+N (start > 0 when decoding with a cache)."""
        _check_length(start + x.shape[1], self.weight.shape[0])
        return x + self.weight[start : start + x.shape[1]].to(x.dtype)


def _check_length(length: int, max_len: int) -> None:
    if length > max_len:
        raise ValueError(
            f"sequence length {length} exceeds the positional table ({max_len}); raise backbone.max_len"
        )


def _offsets(q_len: int, k_len: int, q_start: int, k_start: int, device) -> Tensor:
    """(Tq, Tk) long: key position minus query position."""
    q_pos = torch.arange(q_start, q_start + q_len, device=device)
    k_pos = torch.arange(k_start, k_start + k_len, device=device)
    return k_pos[None, :] - q_pos[:, None]


class RelativePositionBias(PositionalEncoding):
    """T5-style learned bias per head over log-spaced buckets of the key-query offset.

    Args:
        num_heads: one bias per head and bucket.
        num_buckets: buckets in total (split between directions when bidirectional).
        max_distance: offsets beyond it share the last bucket.
        bidirectional: separate buckets for keys before and after the query (encoders).
    """

    def __init__(
        self, *, num_heads: int, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = True
    ) -> None:
        super().__init__()
        self.num_buckets, self.max_distance, self.bidirectional = num_buckets, max_distance, bidirectional
        self.embedding = nn.Embedding(num_buckets, num_heads)  # (buckets, H)
        nn.init.zeros_(self.embedding.weight)

    def bucket(self, offset: Tensor) -> Tensor:
        """Bucket index of each key-minus-query offset (any shape, long)."""
        buckets = self.num_buckets
        index = torch.zeros_like(offset)
        if self.bidirectional:
            buckets //= 2
            index = index + (offset > 0).long() * buckets
            distance = offset.abs()
        else:
            distance = (-offset).clamp(min=0)  # only keys at or before the query count
        exact = buckets // 2  # small distances get one bucket each
        log_ratio = torch.log(distance.float().clamp(min=1) / exact) / math.log(self.max_distance / exact)
        far = (exact + (log_ratio * (buckets - exact)).long()).clamp(max=buckets - 1)
        return index + torch.where(distance < exact, distance, far)

    def bias(self, q_len, k_len, *, q_start=0, k_start=0, device=None, dtype=None):
        buckets = self.bucket(_offsets(q_len, k_len, q_start, k_start, self.embedding.weight.device))
        bias = self.embedding(buckets).permute(2, 0, 1)  # (H, Tq, Tk)
        return bias.to(device=device, dtype=dtype or bias.dtype)


def alibi_slopes(num_heads: int) -> Tensor:
    """Per-head slopes (H,): a geometric sequence 2^(-8/n), 2^(-16/n), ... (interleaved when H is not a power of 2)."""
    def powers(n: int) -> list[float]:
        start = 2 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    closest = 2 ** math.floor(math.log2(num_heads))
    slopes = powers(closest)
    if closest < num_heads:
        slopes += powers(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes)


class ALiBi(PositionalEncoding):
    """Attention with linear biases (Press et al., 2022): score bias -slope_h * |i - j|, no parameters."""

    def __init__(self, *, num_heads: int) -> None:
        super().__init__()
        self.register_buffer("slopes", alibi_slopes(num_heads), persistent=False)  # (H,)

    def bias(self, q_len, k_len, *, q_start=0, k_start=0, device=None, dtype=None):
        distance = _offsets(q_len, k_len, q_start, k_start, self.slopes.device).abs()  # (Tq, Tk)
        bias = -self.slopes[:, None, None] * distance  # (H, Tq, Tk)
        return bias.to(device=device, dtype=dtype or bias.dtype)


def _rotate_half(x: Tensor) -> Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def _rope_angles(positions: Tensor, dim: int, base: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """(T, dim) angles: positions (T,) times dim/2 frequencies, repeated for both halves.

    Computed in float32 (float64 for float64 inputs), never in half precision.
    """
    dtype = torch.float64 if dtype == torch.float64 else torch.float32
    freq = base ** (-torch.arange(0, dim, 2, device=positions.device, dtype=dtype) / dim)  # (dim/2,)
    angles = positions.to(dtype)[:, None] * freq[None, :]  # (T, dim/2)
    return torch.cat([angles, angles], dim=-1)


def _apply_rotation(x: Tensor, angles: Tensor) -> Tensor:
    """Rotate the last dim of x (B, H, T, d) by angles (T, d) in (i, i + d/2) pairs."""
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    return x * cos + _rotate_half(x) * sin


class RotaryPositionalEncoding(PositionalEncoding):
    """RoPE (Su et al., 2021) over 1-D token positions: q.k depends only on the offset.

    Args:
        head_dim: per-head width (even); rotated in (i, i + head_dim/2) pairs.
        base: frequency base (10000 in the paper).
    """

    def __init__(self, *, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2 != 0:
            raise ValueError(f"RoPE needs an even head dim, got {head_dim}; change backbone.dim or num_heads")
        self.head_dim, self.base = head_dim, base

    def rotate(self, q, k, *, q_start=0, k_start=0):
        q_pos = torch.arange(q_start, q_start + q.shape[-2], device=q.device)
        k_pos = torch.arange(k_start, k_start + k.shape[-2], device=k.device)
        q = _apply_rotation(q, _rope_angles(q_pos, self.head_dim, self.base, q.dtype))
        k = _apply_rotation(k, _rope_angles(k_pos, self.head_dim, self.base, k.dtype))
        return q, k


class AxialRotaryPositionalEncoding(PositionalEncoding):
    """Axial RoPE for 2-D images (rows, cols) or 3-D video (frames, rows, cols).

    The head dim is split into one even-sized part per axis; each part is rotated by that axis's
    coordinate. Tokens are the grid in row-major order, optionally after leading prefix tokens
    (CLS, registers) that stay unrotated. The grid comes from ``grid`` or, when None, is inferred
    as the largest square (2-D) or cube (3-D) with at most ``max_prefix`` tokens left as prefix.

    Args:
        head_dim: per-head width, divisible by 2 * axes.
        axes: 2 or 3.
        grid: token grid shape, e.g. (14, 14) or (8, 14, 14); None infers it.
        max_prefix: most leading non-grid tokens accepted when inferring the grid.
        base: frequency base.
    """

    def __init__(
        self,
        *,
        head_dim: int,
        axes: int = 2,
        grid: tuple[int, ...] | None = None,
        max_prefix: int = 8,
        base: float = 100.0,
    ) -> None:
        super().__init__()
        if axes not in (2, 3):
            raise ValueError(f"axial RoPE supports 2 or 3 axes, got {axes}")
        if head_dim % (2 * axes) != 0:
            raise ValueError(
                f"axial RoPE over {axes} axes needs head dim divisible by {2 * axes}, got {head_dim}; "
                "change backbone.dim or backbone.num_heads"
            )
        if grid is not None and len(grid) != axes:
            raise ValueError(f"grid {tuple(grid)} must have {axes} sizes")
        self.head_dim, self.axes, self.base, self.max_prefix = head_dim, axes, base, max_prefix
        self.grid = tuple(grid) if grid is not None else None

    def _grid(self, length: int) -> tuple[tuple[int, ...], int]:
        """(grid shape, number of prefix tokens) for a sequence of `length` tokens."""
        if self.grid is not None:
            grid = self.grid
            prefix = length - math.prod(grid)
        else:
            side = round(length ** (1.0 / self.axes))
            while side**self.axes > length:
                side -= 1
            grid = (side,) * self.axes
            prefix = length - side**self.axes
            if prefix > self.max_prefix:  # too many leftover tokens to be CLS/register tokens
                prefix = -1
        if prefix < 0:
            raise ValueError(
                f"{length} tokens do not form a {self.axes}-D grid{'' if self.grid is None else f' {self.grid}'} "
                "(plus prefix tokens); use backbone.pos_encoding=rope for 1-D sequences"
            )
        return grid, prefix

    def angles(self, length: int, start: int, device, dtype: torch.dtype = torch.float32) -> Tensor:
        """(T, head_dim) angles for tokens start..start+length of the (prefix + grid) sequence."""
        grid, prefix = self._grid(start + length)
        part = self.head_dim // self.axes
        coords = torch.stack(
            torch.meshgrid(*(torch.arange(n, device=device) for n in grid), indexing="ij"), dim=-1
        ).reshape(-1, self.axes)  # (prod(grid), axes)
        coords = torch.cat([torch.zeros(prefix, self.axes, dtype=coords.dtype, device=device), coords])
        coords = coords[start : start + length]
        # each axis rotates its own slice of the head dim; halves are interleaved per axis
        per_axis = [_rope_angles(coords[:, a], part, self.base, dtype) for a in range(self.axes)]  # each (T, part)
        return torch.cat(per_axis, dim=-1)

    def _rotate_one(self, x: Tensor, start: int) -> Tensor:
        angles = self.angles(x.shape[-2], start, x.device, x.dtype)
        parts = x.split(self.head_dim // self.axes, dim=-1)
        angle_parts = angles.split(self.head_dim // self.axes, dim=-1)
        return torch.cat([_apply_rotation(p, a) for p, a in zip(parts, angle_parts)], dim=-1)

    def rotate(self, q, k, *, q_start=0, k_start=0):
        return self._rotate_one(q, q_start), self._rotate_one(k, k_start)


# Builders named by `backbone.pos_encoding`, each called as (dim=, num_heads=, max_len=, **options).
def _none(*, dim: int, num_heads: int, max_len: int) -> PositionalEncoding:
    return PositionalEncoding()


def _sinusoidal(*, dim: int, num_heads: int, max_len: int, **options: Any) -> PositionalEncoding:
    return SinusoidalPositionalEncoding(dim=dim, max_len=max_len, **options)


def _learned(*, dim: int, num_heads: int, max_len: int, **options: Any) -> PositionalEncoding:
    return LearnedPositionalEncoding(dim=dim, max_len=max_len, **options)


def _relative(*, dim: int, num_heads: int, max_len: int, **options: Any) -> PositionalEncoding:
    return RelativePositionBias(num_heads=num_heads, **options)


def _alibi(*, dim: int, num_heads: int, max_len: int) -> PositionalEncoding:
    return ALiBi(num_heads=num_heads)


def _rope(*, dim: int, num_heads: int, max_len: int, **options: Any) -> PositionalEncoding:
    return RotaryPositionalEncoding(head_dim=dim // num_heads, **options)


def _rope2d(*, dim: int, num_heads: int, max_len: int, **options: Any) -> PositionalEncoding:
    return AxialRotaryPositionalEncoding(head_dim=dim // num_heads, axes=2, **options)


def _rope3d(*, dim: int, num_heads: int, max_len: int, **options: Any) -> PositionalEncoding:
    return AxialRotaryPositionalEncoding(head_dim=dim // num_heads, axes=3, **options)


POSITIONAL_ENCODINGS: dict[str, Callable[..., PositionalEncoding]] = {
    "none": _none,
    "sinusoidal": _sinusoidal,
    "learned": _learned,
    "relative": _relative,
    "alibi": _alibi,
    "rope": _rope,
    "rope2d": _rope2d,
    "rope3d": _rope3d,
}


def build_positional_encoding(
    kind: str, *, dim: int, num_heads: int, max_len: int, **options: Any
) -> PositionalEncoding:
    """Build the encoding named by `backbone.pos_encoding`; `options` go to its constructor."""
    if kind not in POSITIONAL_ENCODINGS:
        raise ValueError(
            f"backbone.pos_encoding='{kind}' is unknown; choose one of {', '.join(POSITIONAL_ENCODINGS)}"
        )
    if dim % num_heads != 0:
        raise ValueError(f"backbone.dim ({dim}) must be divisible by backbone.num_heads ({num_heads})")
    return POSITIONAL_ENCODINGS[kind](dim=dim, num_heads=num_heads, max_len=max_len, **options)
