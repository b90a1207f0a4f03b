"""torchaudio's Conformer (Gulati et al. 2020) behind the backbone contract, for speech."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchaudio.models import Conformer


class ConformerEncoder(nn.Module):
    """A torchaudio `Conformer` stack: each block is feed-forward / self-attention / depthwise convolution /
    feed-forward (macaron), so local patterns (formant transitions) come from the convolution and long
    ones from attention. Its attention is torchaudio's (PyTorch's `nn.MultiheadAttention` with relative
    positions left out), not `attnlab.attention`: the preset exists to compare against a reference
    speech encoder; attention maps and the attention config group do not apply to it.

    Args:
        dim: width D of the tokens in and out.
        depth: Conformer blocks.
        num_heads: attention heads.
        ffn_dim: hidden width of the feed-forward modules.
        kernel_size: depthwise convolution kernel (odd; 31 in the paper, over 40 ms tokens ~1.2 s).
        dropout: dropout inside every module.
    """

    takes_pixels = False

    def __init__(
        self, *, dim: int = 144, depth: int = 4, num_heads: int = 4, ffn_dim: int = 576, kernel_size: int = 15,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"backbone.kernel_size={kernel_size} must be odd (a centred depthwise convolution)")
        if dim % num_heads:
            raise ValueError(f"backbone.dim={dim} must be divisible by backbone.num_heads={num_heads}")
        self.dim, self.depth = dim, depth
        self.conformer = Conformer(
            input_dim=dim, num_heads=num_heads, ffn_dim=ffn_dim, num_layers=depth,
            depthwise_conv_kernel_size=kernel_size, dropout=dropout,
        )

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        """tokens (B, N, D), mask (B, N) True = real token (a left-aligned prefix) -> (B, N, D)."""
        if tokens.dim() != 3 or tokens.shape[-1] != self.dim:
            raise ValueError(f"encoder tokens must be (B, N, dim={self.dim}), got {tuple(tokens.shape)}")
        if mask is None:
            return self.conformer(tokens, torch.full(tokens.shape[:1], tokens.shape[1], device=tokens.device))[0]
        lengths = mask.sum(1)  # (B,)
        longest = int(lengths.max())  # torchaudio sizes its padding mask by the longest length: run on that width
        hidden, _ = self.conformer(tokens[:, :longest], lengths)  # (B, longest, D)
        hidden = nn.functional.pad(hidden, (0, 0, 0, tokens.shape[1] - longest))  # (B, N, D)
        return hidden.masked_fill(~mask[..., None], 0.0)
