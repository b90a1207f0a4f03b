"""Attention analysis: per-head statistics, rollout, massive values in Q/K/V, and their plots.

Feed it what `attnlab.attention.capture_attention` records; `scripts/analyze_attention.py` runs it
all on a checkpoint and writes a Markdown report with PNGs.
"""

from attnlab.analysis.massive import (
    DEFAULT_LAMBDA,
    DimensionNorms,
    RopeDim,
    dimension_norms,
    flag_massive,
    mean_replace_editor,
    norm_ratio,
    random_dims_like,
    rope_band_counts,
    rope_dimension_info,
)
from attnlab.analysis.plots import plot_layer_head_matrix, plot_norm_matrices, plot_token_map
from attnlab.analysis.rollout import attention_rollout
from attnlab.analysis.stats import (
    HeadStats,
    HeadStatsAccumulator,
    SinkStats,
    attention_entropy,
    infer_key_mask,
    mean_attention_distance,
    sink_statistics,
    token_positions,
)

__all__ = [
    "DEFAULT_LAMBDA",
    "DimensionNorms",
    "HeadStats",
    "HeadStatsAccumulator",
    "RopeDim",
    "SinkStats",
    "attention_entropy",
    "attention_rollout",
    "dimension_norms",
    "flag_massive",
    "infer_key_mask",
    "mean_attention_distance",
    "mean_replace_editor",
    "norm_ratio",
    "plot_layer_head_matrix",
    "plot_norm_matrices",
    "plot_token_map",
    "random_dims_like",
    "rope_band_counts",
    "rope_dimension_info",
    "sink_statistics",
    "token_positions",
]
