"""Per-head statistics of captured attention weights: entropy, mean attention distance, sink share.

Shape legend: B batch, H heads, Tq queries, Tk keys, N tokens of a self-attention layer (Tq = Tk = N).
Every function takes the (B, H, Tq, Tk) weights `capture_attention` records plus optional masks
(True = real token). Padded keys are dropped and each query's weights renormalised over the valid
keys, so a model (or a synthetic map) that leaks weight onto padding is measured on its real keys;
padded queries (and queries whose valid keys got no weight at all) are left out of every average.

- **entropy** (nats) of each query's distribution over its valid keys, averaged over valid queries:
  log(n) for uniform attention over n keys, 0 for one-hot attention. ``max_entropy`` is the mean
  log(#valid keys), the entropy of uniform attention over the same keys.
- **mean attention distance** (Dosovitskiy et al. 2021, their Fig. 7): sum_j w_ij |p_i - p_j| per
  query, averaged over queries; in tokens for 1-D sequences, in pixels between patch centres for an
  image grid. Prefix tokens (CLS, registers) have no position: they are left out as queries and as
  keys (weights renormalised over the grid keys); the share they draw shows up in the sink statistics.
- **sink statistics**: ``peak_share`` is the mean over queries of the largest weight (the share of
  attention on each query's most-attended key); ``sink_key`` is the key index that is most often
  that most-attended key, ``sink_frequency`` how often it is, and ``sink_share`` the mean weight
  all queries put on it (an attention sink in the sense of Xiao et al. 2024 has a high sink share).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class HeadStats:
    """One layer's per-head statistics over every query seen; each array is (H,)."""

    entropy: np.ndarray  # nats
    max_entropy: np.ndarray  # nats of uniform attention over the same valid keys (a per-layer scale)
    distance: np.ndarray  # mean attention distance (``distance_unit``), NaN when not measured
    peak_share: np.ndarray  # mean over queries of the largest weight
    sink_key: np.ndarray  # int: key index most often attended most
    sink_frequency: np.ndarray  # fraction of queries whose most-attended key is ``sink_key``
    sink_share: np.ndarray  # mean weight on ``sink_key``
    num_queries: int  # valid queries averaged over (per head)
    distance_unit: str = "tokens"  # "tokens" | "px" | "" (not measured)


def infer_key_mask(weights: Tensor) -> Tensor:
    """(B, Tk) bool: keys that some head and query attends to with nonzero weight.

    Masked keys get exactly zero weight from the softmax, so this recovers a key padding mask from
    captured weights (a causal mask still leaves every key attended by some later query).
    """
    _check_weights(weights)
    return weights.detach().abs().amax(dim=(1, 2)) > 0  # (B, Tk)


def attention_entropy(
    weights: Tensor, key_padding_mask: Tensor | None = None, query_mask: Tensor | None = None
) -> Tensor:
    """(H,) mean entropy in nats of each valid query's attention over its valid keys."""
    acc = HeadStatsAccumulator()
    acc.update(weights, key_padding_mask, query_mask, distance=False)
    return torch.from_numpy(acc.compute().entropy)


def mean_attention_distance(
    weights: Tensor,
    key_padding_mask: Tensor | None = None,
    query_mask: Tensor | None = None,
    *,
    grid: tuple[int, int] | None = None,
    patch_size: float | tuple[float, float] = 1.0,
    num_prefix: int = 0,
) -> Tensor:
    """(H,) mean attention distance of self-attention weights (B, H, N, N).

    Args:
        grid: (gh, gw) of an image's patch grid (tokens in row-major order after ``num_prefix``
            prefix tokens): distances in pixels between patch centres. None: a 1-D sequence,
            distances in tokens.
        patch_size: patch side in pixels, or (ph, pw).
        num_prefix: leading tokens without a grid position (CLS, registers); image grids only.
    """
    acc = HeadStatsAccumulator()
    acc.update(weights, key_padding_mask, query_mask, grid=grid, patch_size=patch_size, num_prefix=num_prefix)
    return torch.from_numpy(acc.compute().distance)


@dataclass
class SinkStats:
    peak_share: Tensor  # (H,)
    sink_key: Tensor  # (H,) long
    sink_frequency: Tensor  # (H,)
    sink_share: Tensor  # (H,)


def sink_statistics(
    weights: Tensor, key_padding_mask: Tensor | None = None, query_mask: Tensor | None = None
) -> SinkStats:
    """Share of attention on each query's most-attended key and the most common such key, per head."""
    acc = HeadStatsAccumulator()
    acc.update(weights, key_padding_mask, query_mask, distance=False)
    stats = acc.compute()
    return SinkStats(
        peak_share=torch.from_numpy(stats.peak_share),
        sink_key=torch.from_numpy(stats.sink_key),
        sink_frequency=torch.from_numpy(stats.sink_frequency),
        sink_share=torch.from_numpy(stats.sink_share),
    )


def token_positions(
    num_tokens: int,
    *,
    grid: tuple[int, int] | None = None,
    patch_size: float | tuple[float, float] = 1.0,
    num_prefix: int = 0,
) -> tuple[Tensor, Tensor]:
    """Positions (N, 1 | 2) float64 and a (N,) bool "has a position" flag for N tokens.

    1-D (grid None): token index. Image grid: (y, x) of each patch centre in pixels, row-major
    after ``num_prefix`` prefix tokens, which get no position.
    """
    if grid is None:
        if num_prefix != 0:
            raise ValueError(f"num_prefix ({num_prefix}) needs grid=(gh, gw); 1-D sequences have no prefix tokens")
        return torch.arange(num_tokens, dtype=torch.float64)[:, None], torch.ones(num_tokens, dtype=torch.bool)
    if len(grid) != 2 or min(grid) <= 0:
        raise ValueError(f"grid={tuple(grid)} must be a (gh, gw) pair of positive ints")
    gh, gw = int(grid[0]), int(grid[1])
    if num_tokens != num_prefix + gh * gw:
        raise ValueError(
            f"{num_tokens} tokens are not num_prefix ({num_prefix}) + grid {gh}x{gw}; "
            "pass the adapter's grid and its number of prefix tokens"
        )
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, (int, float)) else patch_size
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    centres = torch.stack([(rows.flatten() + 0.5) * ph, (cols.flatten() + 0.5) * pw], dim=-1).double()  # (gh*gw, 2)
    positions = torch.cat([torch.zeros(num_prefix, 2, dtype=torch.float64), centres])  # (N, 2)
    has_position = torch.arange(num_tokens) >= num_prefix
    return positions, has_position


class HeadStatsAccumulator:
    """Accumulates per-head statistics of one layer over batches (and calls); `compute` averages.

    Key sequences may differ in length between batches (padding to the batch's longest); key
    indices are positions, so the sink key of padded batches is counted on a common axis.
    """

    def __init__(self) -> None:
        self.num_heads: int | None = None
        self.num_queries = 0
        self.entropy_sum: Tensor | None = None  # (H,)
        self.log_keys_sum: Tensor | None = None  # (H,)
        self.peak_sum: Tensor | None = None  # (H,)
        self.argmax_counts = torch.zeros(0, 0, dtype=torch.float64)  # (H, Tk max)
        self.received_sum = torch.zeros(0, 0, dtype=torch.float64)  # (H, Tk max)
        self.distance_sum: Tensor | None = None  # (H,)
        self.distance_count: Tensor | None = None  # (H,) queries with weight on positioned keys
        self.distance_unit = ""

    def update(
        self,
        weights: Tensor,
        key_padding_mask: Tensor | None = None,
        query_mask: Tensor | None = None,
        *,
        distance: bool = True,
        grid: tuple[int, int] | None = None,
        patch_size: float | tuple[float, float] = 1.0,
        num_prefix: int = 0,
    ) -> None:
        """Add one call's weights (B, H, Tq, Tk); the distance needs self-attention (Tq = Tk)."""
        w, valid_q = _normalised(weights, key_padding_mask, query_mask)  # (B, H, Tq, Tk) float64, (B, Tq)
        batch, heads, q_len, k_len = w.shape
        if self.num_heads is None:
            self.num_heads = heads
            zeros = torch.zeros(heads, dtype=torch.float64)
            self.entropy_sum, self.log_keys_sum, self.peak_sum, self.distance_sum, self.distance_count = (
                zeros.clone() for _ in range(5)
            )
        elif heads != self.num_heads:
            raise ValueError(f"weights have {heads} heads, earlier updates of this layer had {self.num_heads}")
        rows = valid_q[:, None, :].expand(batch, heads, q_len).to(torch.float64)  # (B, H, Tq)
        self.num_queries += int(valid_q.sum())
        keys = _key_mask(key_padding_mask, batch, k_len, weights.device).to(torch.float64)  # (B, Tk)
        log_keys = keys.sum(-1).clamp(min=1).log()  # (B,)
        entropy = -torch.xlogy(w, w).sum(-1)  # (B, H, Tq); 0 log 0 = 0
        self.entropy_sum += (entropy * rows).sum(dim=(0, 2))
        self.log_keys_sum += (log_keys[:, None, None] * rows).sum(dim=(0, 2))
        peak, argmax = w.max(dim=-1)  # (B, H, Tq)
        self.peak_sum += (peak * rows).sum(dim=(0, 2))
        counts = torch.zeros(batch, heads, q_len, k_len, dtype=torch.float64)
        counts.scatter_(-1, argmax.unsqueeze(-1), rows.unsqueeze(-1))  # one-hot of each valid query's argmax
        self._add_per_key("argmax_counts", counts.sum(dim=(0, 2)))  # (H, Tk)
        self._add_per_key("received_sum", (w * rows.unsqueeze(-1)).sum(dim=(0, 2)))  # (H, Tk)
        if distance and q_len == k_len:
            positions, has_position = token_positions(k_len, grid=grid, patch_size=patch_size, num_prefix=num_prefix)
            dist = torch.cdist(positions, positions)  # (N, N)
            spatial_w = w * has_position.to(w)  # prefix keys out ...
            spatial_w = spatial_w / spatial_w.sum(-1, keepdim=True).clamp(min=1e-300)  # ... and renormalised
            spatial_rows = rows * has_position.to(rows) * (spatial_w.sum(-1) > 0)  # (B, H, Tq)
            per_query = (spatial_w * dist.to(w)).sum(-1)  # (B, H, Tq)
            self.distance_sum += (per_query * spatial_rows).sum(dim=(0, 2))
            self.distance_count += spatial_rows.sum(dim=(0, 2))
            self.distance_unit = "tokens" if grid is None else "px"
        elif distance:
            raise ValueError(
                f"mean attention distance needs self-attention weights (Tq == Tk), got Tq={q_len}, Tk={k_len}; "
                "pass distance=False for cross-attention"
            )

    def _add_per_key(self, name: str, values: Tensor) -> None:
        """Add (H, Tk) to a running (H, Tk max) sum, growing it when Tk exceeds what was seen."""
        current = getattr(self, name)
        width = max(current.shape[1], values.shape[1])
        grown = torch.zeros(values.shape[0], width, dtype=torch.float64)
        grown[:, : current.shape[1]] += current if current.numel() else 0
        grown[:, : values.shape[1]] += values
        setattr(self, name, grown)

    def compute(self) -> HeadStats:
        if self.num_heads is None:
            raise ValueError("HeadStatsAccumulator.compute() before any update(); feed it captured weights first")
        n = max(self.num_queries, 1)
        sink_key = self.argmax_counts.argmax(dim=-1)  # (H,)
        rows = torch.arange(self.num_heads)
        nan = torch.full((self.num_heads,), math.nan, dtype=torch.float64)
        measured = self.distance_count > 0
        distance = torch.where(measured, self.distance_sum / self.distance_count.clamp(min=1), nan)
        return HeadStats(
            entropy=(self.entropy_sum / n).numpy(),
            max_entropy=(self.log_keys_sum / n).numpy(),
            distance=distance.numpy(),
            peak_share=(self.peak_sum / n).numpy(),
            sink_key=sink_key.numpy(),
            sink_frequency=(self.argmax_counts[rows, sink_key] / n).numpy(),
            sink_share=(self.received_sum[rows, sink_key] / n).numpy(),
            num_queries=self.num_queries,
            distance_unit=self.distance_unit if bool(measured.any()) else "",
        )


def _check_weights(weights: Tensor) -> None:
    if not isinstance(weights, Tensor) or weights.dim() != 4:
        shape = tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
        raise ValueError(f"weights must be a (B, H, Tq, Tk) tensor of attention weights, got {shape}")


def _key_mask(mask: Tensor | None, batch: int, length: int, device: torch.device) -> Tensor:
    return torch.ones(batch, length, dtype=torch.bool, device=device) if mask is None else mask.bool()


def _check_mask(mask: Tensor | None, shape: Sequence[int], name: str) -> None:
    if mask is not None and tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must be (B, T) = {tuple(shape)} (True = real token), got {tuple(mask.shape)}")


def _normalised(
    weights: Tensor, key_padding_mask: Tensor | None, query_mask: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Weights (B, H, Tq, Tk) float64 on the CPU, renormalised over valid keys, and the (B, Tq) valid queries."""
    _check_weights(weights)
    batch, _, q_len, k_len = weights.shape
    _check_mask(key_padding_mask, (batch, k_len), "key_padding_mask")
    _check_mask(query_mask, (batch, q_len), "query_mask")
    w = weights.detach().double().cpu()
    keys = _key_mask(key_padding_mask, batch, k_len, w.device).cpu()
    w = w * keys[:, None, None, :]  # (B, H, Tq, Tk): padded keys out
    total = w.sum(-1, keepdim=True)  # (B, H, Tq, 1)
    w = w / total.clamp(min=1e-300)
    queries = _key_mask(query_mask, batch, q_len, w.device).cpu()
    queries = queries & (total.squeeze(-1) > 0).all(dim=1)  # (B, Tq): rows with no weight on valid keys out
    return w, queries
