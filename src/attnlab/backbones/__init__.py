"""Backbones: encoder stacks built from `attnlab.attention`, and adapters for timm models."""

from attnlab.backbones.timm_backbone import TimmBackbone
from attnlab.backbones.transformer import EncoderBlock, FeedForward, TransformerEncoder

__all__ = ["EncoderBlock", "FeedForward", "TimmBackbone", "TransformerEncoder"]
