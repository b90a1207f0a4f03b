"""Video adapter: a batch's clips -> tubelet tokens with separate spatial and temporal positions."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from attnlab.embed.image import _pair


class VideoPatchEmbed(nn.Module):
    """Cut (B, T, C, H, W) clips into tubelets of ``tubelet_size`` frames x (ph, pw) pixels, one D-dim
    token each, and add a learned spatial position (per patch) plus a learned temporal position (per
    time step), as TimeSformer / ViViT do.

    Tokens are time-major: the (gh, gw) patch grid of time step 0 in row-major order, then time step 1,
    ..., so ``tokens.view(B, T', N, D)`` separates time from space (T' = T / tubelet_size,
    N = gh * gw), and axial RoPE over ``grid = (T', gh, gw)`` fits them.

    Args:
        dim: token width D.
        num_frames: frames T per clip (``data.num_frames``).
        image_size: frame side, or (H, W).
        patch_size: patch side, or (ph, pw).
        tubelet_size: frames per token (1: one token per frame and patch).
        in_chans: channels per frame.
        video_key: batch field holding the clips.
        temporal_pos: add the learned temporal position. Off for frame-independent models
            (``space_only``): with it a frame's tokens would know their time step.
        stem_channels: if > 0, a 3x3 convolution per frame with this many channels (+ GELU) before
            the tubelet projection, so tokens see strokes across patch borders.

    Attributes:
        grid: (T', gh, gw), the token grid; num_steps: T'; num_patches: N = gh * gw per step.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_frames: int,
        image_size: int | tuple[int, int],
        patch_size: int | tuple[int, int],
        tubelet_size: int = 1,
        in_chans: int = 1,
        video_key: str = "video",
        temporal_pos: bool = True,
        stem_channels: int = 0,
    ) -> None:
        super().__init__()
        self.image_size = _pair(image_size, "data.image_size")  # (H, W)
        self.patch_size = _pair(patch_size, "model.tasks.<task>.adapter.patch_size")  # (ph, pw)
        if any(side % patch for side, patch in zip(self.image_size, self.patch_size)):
            raise ValueError(
                f"data.image_size {self.image_size} (H, W) must be divisible by the adapter's patch_size "
                f"{self.patch_size}; change data.image_size or model.tasks.<task>.adapter.patch_size"
            )
        if num_frames < 1 or tubelet_size < 1 or num_frames % tubelet_size:
            raise ValueError(
                f"data.num_frames={num_frames} must be a positive multiple of the adapter's "
                f"tubelet_size={tubelet_size}"
            )
        self.num_frames, self.tubelet_size, self.in_chans, self.video_key = num_frames, tubelet_size, in_chans, video_key
        self.num_steps = num_frames // tubelet_size  # T'
        grid_h, grid_w = self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1]
        self.grid = (self.num_steps, grid_h, grid_w)  # (T', gh, gw)
        self.num_patches = grid_h * grid_w  # N per time step
        self.stem = (
            nn.Sequential(nn.Conv3d(in_chans, stem_channels, kernel_size=(1, 3, 3), padding=(0, 1, 1)), nn.GELU())
            if stem_channels > 0
            else nn.Identity()
        )
        self.proj = nn.Conv3d(
            stem_channels or in_chans, dim, kernel_size=(tubelet_size, *self.patch_size),
            stride=(tubelet_size, *self.patch_size),
        )
        self.space_pos = nn.Parameter(torch.randn(1, 1, self.num_patches, dim) * 0.02)  # (1, 1, N, D)
        self.time_pos = nn.Parameter(torch.randn(1, self.num_steps, 1, dim) * 0.02) if temporal_pos else None  # (1, T', 1, D)

    def forward(self, batch: dict[str, Any]) -> tuple[Tensor, None]:
        clips = batch[self.video_key]  # (B, T, C, H, W)
        expected = (self.num_frames, self.in_chans, *self.image_size)
        if clips.dim() != 5 or tuple(clips.shape[1:]) != expected:
            raise ValueError(
                f"clips are {tuple(clips.shape)} but the adapter expects (B, T, C, H, W) = (B, {', '.join(map(str, expected))}); "
                "set data.num_frames, data.image_size and data.in_chans to match the adapter"
            )
        x = self.proj(self.stem(clips.transpose(1, 2)))  # (B, D, T', gh, gw)
        tokens = x.flatten(3).permute(0, 2, 3, 1)  # (B, T', N, D)
        tokens = tokens + self.space_pos
        if self.time_pos is not None:
            tokens = tokens + self.time_pos
        return tokens.flatten(1, 2), None  # (B, T' * N, D), time-major; every token is real
