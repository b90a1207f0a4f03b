"""The attention library: the only place attention math lives."""

from attnlab.attention.multihead import KVCache, MultiHeadAttention
from attnlab.attention.positional import (
    POSITIONAL_ENCODINGS,
    LearnedPositionalEncoding,
    PositionalEncoding,
    SinusoidalPositionalEncoding,
    build_positional_encoding,
)
from attnlab.attention.sdpa import BACKENDS, causal_mask, reference_attention, scaled_dot_product_attention

__all__ = [
    "BACKENDS",
    "KVCache",
    "LearnedPositionalEncoding",
    "MultiHeadAttention",
    "POSITIONAL_ENCODINGS",
    "PositionalEncoding",
    "SinusoidalPositionalEncoding",
    "build_positional_encoding",
    "causal_mask",
    "reference_attention",
    "scaled_dot_product_attention",
]
