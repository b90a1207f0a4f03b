"""The attention library: the only place attention math lives.

Every attention module takes ``(dim=, num_heads=)`` plus defaults and shares the forward signature
of `MultiHeadAttention`, so a backbone builds any of them from the ``attention`` config group.
"""

from attnlab.attention.additive import AdditiveAttention, AdditiveScore, LuongAttention, MultiplicativeScore
from attnlab.attention.bidaf import BiDAFAttention, TrilinearSimilarity
from attnlab.attention.capture import AttentionRecord, attention_layers, capture_attention
from attnlab.attention.gates import AttentionGate
from attnlab.attention.linear import LinearAttention, linear_attention
from attnlab.attention.low_rank import LowRankAttention
from attnlab.attention.multihead import KVCache, MultiHeadAttention
from attnlab.attention.positional import (
    POSITIONAL_ENCODINGS,
    ALiBi,
    AxialRotaryPositionalEncoding,
    LearnedPositionalEncoding,
    PositionalEncoding,
    RelativePositionBias,
    RotaryPositionalEncoding,
    SinusoidalPositionalEncoding,
    build_positional_encoding,
)
from attnlab.attention.sdpa import (
    BACKENDS,
    causal_mask,
    reference_attention,
    scaled_dot_product_attention,
    softmax_attention,
)
from attnlab.attention.sliding_window import (
    SlidingWindowAttention,
    sliding_window_attention,
    sliding_window_mask,
)

__all__ = [
    "BACKENDS",
    "POSITIONAL_ENCODINGS",
    "ALiBi",
    "AdditiveAttention",
    "AdditiveScore",
    "AttentionGate",
    "AttentionRecord",
    "AxialRotaryPositionalEncoding",
    "BiDAFAttention",
    "KVCache",
    "LearnedPositionalEncoding",
    "LinearAttention",
    "LowRankAttention",
    "LuongAttention",
    "MultiHeadAttention",
    "MultiplicativeScore",
    "PositionalEncoding",
    "RelativePositionBias",
    "RotaryPositionalEncoding",
    "SinusoidalPositionalEncoding",
    "SlidingWindowAttention",
    "TrilinearSimilarity",
    "attention_layers",
    "build_positional_encoding",
    "capture_attention",
    "causal_mask",
    "linear_attention",
    "reference_attention",
    "scaled_dot_product_attention",
    "sliding_window_attention",
    "sliding_window_mask",
    "softmax_attention",
]
