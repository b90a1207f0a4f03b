"""Image adapter: a batch's images -> patch tokens with learned 2-D position embeddings."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class ImagePatchEmbed(nn.Module):
    """Cut (B, C, H, W) images into non-overlapping patches and project each to a D-dim token.

    Args:
        dim: token width D (the backbone's).
        image_size: input height = width.
        patch_size: patch side; the image yields (image_size / patch_size)^2 tokens.
        in_chans: image channels.
        image_key: batch field holding the images.
        pos_embed: add a learned (N, D) position embedding over the patch grid.
        stem_channels: if > 0, a 3x3 convolution with this many channels (+ GELU) runs before the
            patch projection, so each token sees local strokes across patch borders (a "conv stem",
            Xiao et al. 2021); it makes small-image transformers train much faster.
    """

    def __init__(
        self,
        *,
        dim: int,
        image_size: int,
        patch_size: int,
        in_chans: int = 3,
        image_key: str = "image",
        pos_embed: bool = True,
        stem_channels: int = 0,
    ) -> None:
        super().__init__()
        if image_size % patch_size != 0:
            raise ValueError(f"image_size ({image_size}) must be divisible by patch_size ({patch_size})")
        self.image_key, self.image_size = image_key, image_size
        self.grid = image_size // patch_size
        self.stem = (
            nn.Sequential(nn.Conv2d(in_chans, stem_channels, kernel_size=3, padding=1), nn.GELU())
            if stem_channels > 0
            else nn.Identity()
        )
        self.proj = nn.Conv2d(stem_channels or in_chans, dim, kernel_size=patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.randn(1, self.grid * self.grid, dim) * 0.02) if pos_embed else None

    def pixels(self, batch: dict[str, Any]) -> tuple[Tensor, None]:
        """The raw images, for backbones that embed pixels themselves (timm)."""
        return batch[self.image_key], None

    def forward(self, batch: dict[str, Any]) -> tuple[Tensor, None]:
        images = batch[self.image_key]  # (B, C, H, W)
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            raise ValueError(
                f"images are {tuple(images.shape[-2:])} but the adapter expects {self.image_size}x{self.image_size}; "
                "set data.image_size to match"
            )
        tokens = self.proj(self.stem(images)).flatten(2).transpose(1, 2)  # (B, N, D)
        if self.pos_embed is not None:
            tokens = tokens + self.pos_embed
        return tokens, None  # every patch is real: no padding mask
