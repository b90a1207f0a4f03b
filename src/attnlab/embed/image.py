"""Image adapter: a batch's images -> patch tokens with learned 2-D position embeddings."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class ImagePatchEmbed(nn.Module):
    """Cut (B, C, H, W) images into non-overlapping patches and project each to a D-dim token.

    Tokens are the (gh, gw) patch grid in row-major order (row by row), so
    ``attnlab.backbones.tokens_to_grid(hidden, adapter.grid_size)`` turns them back into maps.

    Args:
        dim: token width D (the backbone's).
        image_size: input side, or (H, W) for non-square images (``data.image_size``).
        patch_size: patch side, or (ph, pw); the image yields (H / ph) * (W / pw) tokens.
        in_chans: image channels.
        image_key: batch field holding the images.
        pos_embed: add a learned (N, D) position embedding over the patch grid.
        stem_channels: if > 0, a 3x3 convolution with this many channels (+ GELU) runs before the
            patch projection, so each token sees local strokes across patch borders (a "conv stem",
            Xiao et al. 2021); it makes small-image transformers train much faster.
        pixels_only: build no layers and serve only `pixels()`: the module passes this when the
            backbone embeds raw images itself (timm), so no parameter sits unused (DDP needs that).

    Attributes:
        image_size: (H, W) the adapter expects.
        patch_size: (ph, pw).
        grid_size: (gh, gw) = (H / ph, W / pw), the token grid.
        grid: the same (gh, gw) tuple, under the name the axial RoPE encodings use
            (``backbone.pos_encoding_options.grid``); it used to be the side of a square grid.
        num_patches: gh * gw = N, the number of tokens.
    """

    def __init__(
        self,
        *,
        dim: int,
        image_size: int | tuple[int, int],
        patch_size: int | tuple[int, int],
        in_chans: int = 3,
        image_key: str = "image",
        pos_embed: bool = True,
        stem_channels: int = 0,
        pixels_only: bool = False,
    ) -> None:
        super().__init__()
        self.image_size = _pair(image_size, "data.image_size")  # (H, W)
        self.patch_size = _pair(patch_size, "model.tasks.<task>.adapter.patch_size")  # (ph, pw)
        if any(side % patch != 0 for side, patch in zip(self.image_size, self.patch_size)):
            raise ValueError(
                f"data.image_size {self.image_size} (H, W) must be divisible by the adapter's patch_size "
                f"{self.patch_size} (ph, pw); change data.image_size or "
                "model.tasks.<task>.adapter.patch_size"
            )
        self.image_key = image_key
        self.grid_size = (self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1])
        self.grid = self.grid_size  # (gh, gw)
        self.num_patches = self.grid_size[0] * self.grid_size[1]  # N
        self.pixels_only = pixels_only
        if pixels_only:
            return
        self.stem = (
            nn.Sequential(nn.Conv2d(in_chans, stem_channels, kernel_size=3, padding=1), nn.GELU())
            if stem_channels > 0
            else nn.Identity()
        )
        self.proj = nn.Conv2d(stem_channels or in_chans, dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.pos_embed = nn.Parameter(torch.randn(1, self.num_patches, dim) * 0.02) if pos_embed else None  # (1, N, D)

    def pixels(self, batch: dict[str, Any]) -> tuple[Tensor, None]:
        """The raw images, for backbones that embed pixels themselves (timm)."""
        return batch[self.image_key], None

    def forward(self, batch: dict[str, Any]) -> tuple[Tensor, None]:
        if self.pixels_only:
            raise RuntimeError("this ImagePatchEmbed was built with pixels_only=True; call pixels(batch)")
        images = batch[self.image_key]  # (B, C, H, W)
        if tuple(images.shape[-2:]) != self.image_size:
            height, width = self.image_size
            raise ValueError(
                f"images are {tuple(images.shape[-2:])} (H, W) but the adapter expects {height}x{width}; "
                "set data.image_size to match"
            )
        tokens = self.proj(self.stem(images)).flatten(2).transpose(1, 2)  # (B, gh*gw, D), row-major
        if self.pos_embed is not None:
            tokens = tokens + self.pos_embed
        return tokens, None  # every patch is real: no padding mask


def _pair(value: int | tuple[int, int], key: str) -> tuple[int, int]:
    """An int side or an (H, W) pair (a YAML list too) -> (H, W) of positive ints."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(isinstance(n, bool) or int(n) != n or n <= 0 for n in pair):
        raise ValueError(f"{key}={value!r} must be a positive int or an (H, W) pair of positive ints")
    return int(pair[0]), int(pair[1])
