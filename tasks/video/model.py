"""Spatio-temporal attention over the shared backbone (TimeSformer, Bertasius et al. 2021).

The route runs the shared transformer over a clip's T' x N tokens (T' time steps of N patches) in one
of three ways, chosen by ``task.st_attention``:

    joint       every block attends over all T' * N tokens          cost per block ~ (T' N)^2
    divided     every block first attends over time (each patch's    ~ N T'^2 + T' N^2
                T' steps), then over space (each step's N patches)
    space_only  each step's N patches through the whole backbone     ~ T' N^2
                on its own; the T' outputs are averaged (no order)

``divided`` adds one temporal attention layer per backbone block (the route owns them: norm,
attention, output projection, a residual branch as in TimeSformer); the spatial step is the backbone's
own block. The head (attention pooling) reads the
(B, T' * N, D) tokens, or the (B, N, D) time average for ``space_only``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Literal

from torch import Tensor, nn

from attnlab.attention import MultiHeadAttention, build_positional_encoding
from attnlab.training.route import TaskRoute

SpaceTime = Literal["joint", "divided", "space_only"]
MODES = ("joint", "divided", "space_only")
RELATIVE_POSITIONS = ("rope", "alibi", "relative", "none")  # encodings applied inside the attention
MAX_STEPS = 1024  # longest clip (time steps) the temporal positions support


class TemporalAttention(nn.Module):
    """x + proj(attn(norm(x))) along time: x is (B * N, T', D), one sequence per patch position.

    ``positions`` acts inside the attention (RoPE by default: scores depend on how many steps apart two
    frames are, so the order of frames is visible from the first step; measured on moving digits, see
    tasks/video/README.md).
    """

    def __init__(
        self, *, dim: int, num_heads: int, attention: Callable[..., nn.Module], positions: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.attn = attention(dim=dim, num_heads=num_heads)
        self.positions = positions
        self.proj = nn.Linear(dim, dim)  # TimeSformer zero-initialises it to start from a pretrained image
        # model; trained from scratch, that delays learning the order of frames

    def forward(self, x: Tensor) -> Tensor:
        return x + self.proj(self.attn(self.norm(x), positions=self.positions))


class SpaceTimeRoute(TaskRoute):
    """batch -> clip tokens through the shared backbone with joint, divided or space-only attention.

    Args:
        dim: backbone width D.
        backbone: the built backbone (a transformer with ``blocks``, ``positions`` and ``norm``).
        st_attention: joint | divided | space_only (see the module docstring).
        attention: factory of the temporal attention layers (``divided``), called as
            ``attention(dim=D, num_heads=H)``; the config passes the backbone's (``${attention}``).
        temporal_positions: relative positions inside the temporal attention (``divided``):
            rope | alibi | relative | none (then only the adapter's learned temporal positions).
    """

    def __init__(
        self,
        *,
        dim: int,
        backbone: nn.Module,
        st_attention: SpaceTime = "divided",
        attention: Callable[..., nn.Module] | None = None,
        temporal_positions: str = "rope",
    ) -> None:
        super().__init__()
        if st_attention not in MODES:
            raise ValueError(f"task.st_attention='{st_attention}' is unknown; choose one of {list(MODES)}")
        if getattr(backbone, "takes_pixels", False) or not all(hasattr(backbone, a) for a in ("blocks", "positions", "norm")):
            raise ValueError(
                f"task=video runs the shared transformer block by block; backbone {type(backbone).__name__} is not "
                "one (use backbone=tiny|compact|small|base)"
            )
        if st_attention != "joint" and getattr(backbone.positions, "axes", None) == 3:
            raise ValueError(
                f"backbone.pos_encoding=rope3d rotates by (time, row, col) over the whole clip, but "
                f"task.st_attention={st_attention} attends within single frames or patches; use task.st_attention=joint, "
                "or backbone.pos_encoding=rope2d with backbone.pos_encoding_options.grid=[rows, cols]"
            )
        self.mode, self.out_dim = st_attention, dim
        if st_attention == "divided":
            if temporal_positions not in RELATIVE_POSITIONS:
                raise ValueError(
                    f"model.tasks.video.route.temporal_positions='{temporal_positions}' must act inside attention: "
                    f"choose one of {list(RELATIVE_POSITIONS)}"
                )
            factory, heads = attention or partial(MultiHeadAttention), backbone.num_heads
            self.temporal = nn.ModuleList(
                TemporalAttention(
                    dim=dim, num_heads=heads, attention=factory,
                    positions=build_positional_encoding(temporal_positions, dim=dim, num_heads=heads, max_len=MAX_STEPS),
                )
                for _ in backbone.blocks
            )

    def forward(self, backbone: nn.Module, adapter: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, None]:
        tokens, _ = adapter(batch)  # (B, T' * N, D), time-major
        steps, patches = adapter.num_steps, adapter.num_patches
        if self.mode == "joint":
            return backbone(tokens), None  # (B, T' * N, D)
        frames = tokens.reshape(-1, patches, tokens.shape[-1])  # (B * T', N, D)
        if self.mode == "space_only":
            hidden = backbone(frames)  # (B * T', N, D): each time step alone
            return hidden.view(-1, steps, patches, hidden.shape[-1]).mean(1), None  # (B, N, D)
        return self.divided(backbone, frames, steps), None  # (B, T' * N, D)

    def divided(self, backbone: nn.Module, frames: Tensor, steps: int) -> Tensor:
        """(B * T', N, D) frames -> (B, T' * N, D): per block, attention over time, then the block over space."""
        patches, width = frames.shape[1:]
        x = backbone.positions.embed(frames)  # the backbone's absolute positions (if any) index patches
        for temporal, block in zip(self.temporal, backbone.blocks, strict=True):
            along_time = x.view(-1, steps, patches, width).transpose(1, 2).reshape(-1, steps, width)  # (B * N, T', D)
            x = temporal(along_time).view(-1, patches, steps, width).transpose(1, 2).reshape(-1, patches, width)
            x, _ = block(x, mask=None, positions=backbone.positions)  # (B * T', N, D)
        return backbone.norm(x).view(-1, steps * patches, width)
