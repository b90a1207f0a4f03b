"""Additive attention gate for skip connections (Oktay et al. 2018, "Attention U-Net").

A coarse gating signal g (what the decoder knows so far) decides, per pixel, how much of a
high-resolution skip feature x passes into the decoder:

    alpha = sigmoid(psi^T ReLU(W_x x + W_g g + b_g) + b_psi)        alpha in [0, 1], one per pixel
    x_hat = alpha * x

Bahdanau's additive score with pixels as keys and the decoder state as the query, normalised by a
sigmoid instead of a softmax (several regions may pass at once).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class AttentionGate(nn.Module):
    """x (B, Cx, H, W) gated by g (B, Cg, h, w), any h x w: g's projection is resized to H x W.

    Args:
        x_channels: channels Cx of the skip feature.
        g_channels: channels Cg of the gating signal.
        inter_channels: width of the additive score's hidden layer (W_x, W_g: C -> inter).

    Returns (gated x (B, Cx, H, W), alpha (B, 1, H, W)).
    """

    def __init__(self, *, x_channels: int, g_channels: int, inter_channels: int) -> None:
        super().__init__()
        if min(x_channels, g_channels, inter_channels) < 1:
            raise ValueError(
                f"AttentionGate channels must be >= 1, got x={x_channels}, g={g_channels}, inter={inter_channels}"
            )
        self.theta_x = nn.Conv2d(x_channels, inter_channels, kernel_size=1, bias=False)  # W_x
        self.phi_g = nn.Conv2d(g_channels, inter_channels, kernel_size=1)  # W_g, b_g
        self.psi = nn.Conv2d(inter_channels, 1, kernel_size=1)  # psi, b_psi

    def coefficients(self, x: Tensor, g: Tensor) -> Tensor:
        """alpha (B, 1, H, W) in [0, 1]."""
        gate = self.phi_g(g)  # (B, inter, h, w)
        if gate.shape[-2:] != x.shape[-2:]:
            gate = F.interpolate(gate, size=x.shape[-2:], mode="bilinear", align_corners=False)  # (B, inter, H, W)
        return torch.sigmoid(self.psi(F.relu(self.theta_x(x) + gate)))

    def forward(self, x: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[0] != g.shape[0]:
            raise ValueError(f"skip batch {x.shape[0]} != gating batch {g.shape[0]}")
        alpha = self.coefficients(x, g)  # (B, 1, H, W)
        return x * alpha, alpha
