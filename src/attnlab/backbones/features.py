"""Helpers for intermediate features: which levels to take, and token sequences <-> 2-D feature maps."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor


def take_indices(num_levels: int, indices: int | Sequence[int] | None, *, what: str = "blocks") -> list[int]:
    """Absolute level indices to return, following timm's `forward_intermediates` convention.

    None -> every level; an int n -> the last n levels; a sequence -> those levels in the order given,
    negative ones counting from the end (-1 is the last). Raises ValueError for anything out of range.
    """
    if indices is None:
        return list(range(num_levels))
    if isinstance(indices, bool) or not isinstance(indices, (int, Sequence)) or isinstance(indices, str):
        raise TypeError(f"indices must be None, an int or a sequence of ints, got {indices!r}")
    if isinstance(indices, int):
        if not 0 < indices <= num_levels:
            raise ValueError(
                f"indices={indices} asks for the last {indices} of {num_levels} {what}; give 1..{num_levels}, "
                "or a list of level indices"
            )
        return list(range(num_levels - indices, num_levels))
    if len(indices) == 0:
        raise ValueError(f"indices is an empty list; give level indices in [-{num_levels}, {num_levels - 1}] or None")
    taken = []
    for index in indices:
        if isinstance(index, bool) or not isinstance(index, int) or not -num_levels <= index < num_levels:
            raise ValueError(
                f"index {index!r} in indices={list(indices)} is out of range for {num_levels} {what}; "
                f"use integers in [-{num_levels}, {num_levels - 1}]"
            )
        taken.append(index % num_levels)
    return taken


def tokens_to_grid(tokens: Tensor, grid: Sequence[int], num_prefix: int = 0) -> Tensor:
    """Token sequence -> 2-D feature map for segmentation-style decoders (pyramids, FPN, UPerNet).

    Args:
        tokens: (B, P + H*W, D), the grid in row-major order after P prefix tokens (CLS, registers),
            as `ImagePatchEmbed` lays out patches.
        grid: (H, W) token grid, e.g. the image adapter's ``grid_size``.
        num_prefix: P leading tokens to drop.

    Returns:
        (B, D, H, W) contiguous feature map.
    """
    if len(grid) != 2:
        raise ValueError(f"tokens_to_grid needs a 2-D grid (H, W), got {tuple(grid)}")
    height, width = (int(n) for n in grid)
    batch, length, dim = tokens.shape
    if num_prefix < 0 or length != num_prefix + height * width:
        raise ValueError(
            f"{length} tokens do not form {num_prefix} prefix tokens + a {height}x{width} grid "
            f"({num_prefix + height * width} tokens); pass the adapter's grid_size and num_prefix"
        )
    spatial = tokens[:, num_prefix:]  # (B, H*W, D)
    return spatial.transpose(1, 2).reshape(batch, dim, height, width).contiguous()  # (B, D, H, W)


def grid_to_tokens(features: Tensor) -> Tensor:
    """(B, D, H, W) feature map -> (B, H*W, D) tokens in row-major order (the inverse of `tokens_to_grid`)."""
    return features.flatten(2).transpose(1, 2)
