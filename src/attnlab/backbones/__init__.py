"""Backbones: encoder and decoder stacks built from `attnlab.attention`, generation (greedy / beam search),
and adapters for timm models."""

from attnlab.backbones.conformer import ConformerEncoder
from attnlab.backbones.decoder import DecoderBlock, DecoderCache, TransformerDecoder
from attnlab.backbones.features import grid_to_tokens, take_indices, tokens_to_grid
from attnlab.backbones.generation import (
    GenerationConfig,
    beam_search,
    generate,
    gnmt_length_penalty,
    greedy_search,
)
from attnlab.backbones.recurrent import AttentiveGRUDecoder, RecurrentDecoderCache, RecurrentEncoder
from attnlab.backbones.timm_backbone import TimmBackbone
from attnlab.backbones.transformer import EncoderBlock, FeedForward, TransformerEncoder

__all__ = [
    "AttentiveGRUDecoder",
    "ConformerEncoder",
    "DecoderBlock",
    "DecoderCache",
    "EncoderBlock",
    "FeedForward",
    "GenerationConfig",
    "RecurrentDecoderCache",
    "RecurrentEncoder",
    "TimmBackbone",
    "TransformerDecoder",
    "TransformerEncoder",
    "beam_search",
    "generate",
    "gnmt_length_penalty",
    "greedy_search",
    "grid_to_tokens",
    "take_indices",
    "tokens_to_grid",
]
