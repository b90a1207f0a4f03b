"""Modality adapters: raw batch fields -> (tokens (B, N, D), mask (B, N) | None)."""

from attnlab.embed.audio import AudioFrameEmbed
from attnlab.embed.image import ImagePatchEmbed
from attnlab.embed.text import TokenEmbed
from attnlab.embed.video import VideoPatchEmbed

__all__ = ["AudioFrameEmbed", "ImagePatchEmbed", "TokenEmbed", "VideoPatchEmbed"]
