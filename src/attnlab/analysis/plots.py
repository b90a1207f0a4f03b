"""PNG plots of the analysis: layer x head heatmaps, norm matrices with massive entries, token maps.

Figures are built with `matplotlib.figure.Figure` (no pyplot, no global backend switch), so the
library draws on any machine, headless included, without touching the caller's matplotlib state.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


def plot_layer_head_matrix(
    values: np.ndarray, *, layers: Sequence[str], title: str, path: str | Path, fmt: str = ".2f", cmap: str = "viridis"
) -> Path:
    """Heatmap of an (L, H) matrix (e.g. entropy per layer and head), annotated; NaN cells blank."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[0] != len(layers):
        raise ValueError(f"values must be (L, H) with L = {len(layers)} layer names, got {values.shape}")
    fig = Figure(figsize=(1.2 + 0.7 * values.shape[1] + 0.09 * max(len(s) for s in layers), 0.9 + 0.45 * len(layers)))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto")
    ax.set_xticks(range(values.shape[1]), [str(h) for h in range(values.shape[1])])
    ax.set_yticks(range(len(layers)), list(layers), fontsize=8)
    ax.set_xlabel("head")
    ax.set_title(title, fontsize=10)
    for (row, col), value in np.ndenumerate(values):
        if np.isfinite(value):
            ax.text(col, row, format(value, fmt), ha="center", va="center", fontsize=7, color="white")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return _save(fig, path)


def plot_norm_matrices(
    norms: dict[str, dict[str, np.ndarray]],
    flags: dict[str, dict[str, np.ndarray]],
    *,
    title: str,
    path: str | Path,
) -> Path:
    """One row per layer, one column per tensor (Q, K, V): the (H, Dh) norm matrix, flagged entries boxed.

    Args:
        norms: layer -> {"q"|"k"|"v": (H, Dh) norms}.
        flags: layer -> {"q"|"k"|"v": (H, Dh) bool} massive entries.
    """
    if not norms:
        raise ValueError("norms is empty: no layer had captured q, k, v (run capture_attention with qkv=True)")
    layers = list(norms)
    kinds = [kind for kind in ("q", "k", "v") if kind in norms[layers[0]]]
    head_dim = max(norms[layer][kind].shape[1] for layer in layers for kind in kinds)
    fig = Figure(figsize=(1.5 + 0.16 * head_dim * len(kinds), 0.6 + 1.0 * len(layers)))
    axes = fig.subplots(len(layers), len(kinds), squeeze=False)
    for row, layer in enumerate(layers):
        for col, kind in enumerate(kinds):
            ax = axes[row][col]
            matrix = np.asarray(norms[layer][kind], dtype=float)  # (H, Dh)
            image = ax.imshow(matrix, cmap="magma", aspect="auto", interpolation="nearest")
            for head, dim in zip(*np.nonzero(np.asarray(flags[layer][kind]))):
                ax.add_patch(_box(dim, head))
            ax.set_yticks(range(matrix.shape[0]))
            ax.tick_params(labelsize=6)
            ax.set_title(f"{layer} {kind.upper()}", fontsize=7)
            if row == len(layers) - 1:
                ax.set_xlabel("head dim", fontsize=7)
            if col == 0:
                ax.set_ylabel("head", fontsize=7)
            fig.colorbar(image, ax=ax, fraction=0.04)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_token_map(
    values: np.ndarray, *, title: str, path: str | Path, grid: tuple[int, int] | None = None, num_prefix: int = 0
) -> Path:
    """A per-token quantity (N,): as an image over the patch grid (prefix tokens listed in the title) or as bars."""
    values = np.asarray(values, dtype=float)
    fig = Figure(figsize=(4.2, 3.6))
    ax = fig.add_subplot()
    if grid is not None and values.shape[0] == num_prefix + grid[0] * grid[1]:
        image = ax.imshow(values[num_prefix:].reshape(grid), cmap="viridis")
        ax.set_xticks(range(grid[1]))
        ax.set_yticks(range(grid[0]))
        ax.set_xlabel("patch column")
        ax.set_ylabel("patch row")
        fig.colorbar(image, ax=ax)
        if num_prefix:
            title += " | prefix: " + ", ".join(f"{v:.3f}" for v in values[:num_prefix])
    else:
        ax.bar(range(values.shape[0]), values)
        ax.set_xlabel("token")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _box(col: float, row: float) -> Rectangle:
    return Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="cyan", linewidth=1.2)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
