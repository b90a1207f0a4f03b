"""Modality adapters: raw batch fields -> (tokens (B, N, D), mask (B, N) | None)."""

from attnlab.embed.image import ImagePatchEmbed

__all__ = ["ImagePatchEmbed"]
