"""Modality adapters: raw batch fields -> (tokens (B, N, D), mask (B, N) | None)."""

from attnlab.embed.image import ImagePatchEmbed
from attnlab.embed.text import TokenEmbed
from attnlab.embed.video import VideoPatchEmbed

__all__ = ["ImagePatchEmbed", "TokenEmbed", "VideoPatchEmbed"]
