"""Attention pictures: token-grid maps overlaid on images, and query x key heatmaps with token labels.

Task predictors (``tasks/<name>/predictor.py``) compose these into their figures; every picture has
a title and a colour bar so it reads at a glance. Figures are plain `matplotlib.figure.Figure`s, not
pyplot ones: nothing switches the user's backend (a notebook keeps its inline one) and nothing needs
closing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image
from torch import Tensor


def as_grid(weights: Tensor, grid: tuple[int, int]) -> np.ndarray:
    """(N,) weights over a row-major token grid -> (gh, gw) float array."""
    gh, gw = grid
    if weights.numel() != gh * gw:
        raise ValueError(f"{weights.numel()} weights do not fill a {gh}x{gw} token grid")
    return weights.detach().float().cpu().reshape(gh, gw).numpy()


def square_grid(num_tokens: int) -> tuple[int, int]:
    """(side, side) for a square number of tokens."""
    side = round(num_tokens**0.5)
    if side * side != num_tokens:
        raise ValueError(f"{num_tokens} tokens do not form a square grid; pass the grid shape")
    return side, side


def overlay(
    figure: Figure,
    ax: Axes,
    image: Image.Image | np.ndarray,
    weights: np.ndarray,
    *,
    title: str,
    label: str = "attention weight",
    alpha: float = 0.6,
) -> None:
    """Draw `image` with the (gh, gw) `weights` stretched over it (one cell per token), a colour bar and a title."""
    pixels = np.asarray(image)
    height, width = pixels.shape[:2]
    ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, extent=(0, width, height, 0))
    shown = ax.imshow(weights, cmap="inferno", alpha=alpha, extent=(0, width, height, 0), interpolation="nearest")
    figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label=label)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def mark_cell(ax: Axes, row: int, col: int, *, grid: tuple[int, int], size: tuple[int, int], color: str = "cyan") -> None:
    """Outline token (row, col) of a (gh, gw) grid drawn over an image of (height, width) pixels."""
    cell_h, cell_w = size[0] / grid[0], size[1] / grid[1]
    ax.add_patch(Rectangle((col * cell_w, row * cell_h), cell_w, cell_h, fill=False, edgecolor=color, linewidth=2))


def token_heatmap(
    figure: Figure,
    ax: Axes,
    weights: np.ndarray,
    *,
    query_labels: Sequence[str],
    key_labels: Sequence[str],
    title: str,
) -> None:
    """(Tq, Tk) weights as a heatmap with the query tokens on the y axis and the key tokens on the x axis."""
    shown = ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0.0)
    figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="attention weight")
    ax.set_xticks(range(len(key_labels)), key_labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(query_labels)), query_labels, fontsize=7)
    ax.set_xlabel("keys")
    ax.set_ylabel("queries")
    ax.set_title(title, fontsize=9)


FIGURE_DPI = 100  # pictures are (panel_size * panels + 0.6) x (panel_size + 0.7) inches at this resolution


def new_figure(panels: int, *, title: str, panel_size: float = 3.2) -> tuple[Figure, list[Axes]]:
    """A row of `panels` axes under a figure title (saved at FIGURE_DPI)."""
    figure = Figure(figsize=(panel_size * panels + 0.6, panel_size + 0.7), layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)
    figure.suptitle(title, fontsize=10)
    return figure, list(axes[0])


def figure_pixels(figure: Figure) -> np.ndarray:
    """(H, W, 3) uint8 rendering of `figure` at FIGURE_DPI (for loggers that take arrays, e.g. W&B)."""
    figure.set_dpi(FIGURE_DPI)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def text_heatmap(
    figure: Figure,
    ax: Axes,
    text: str,
    spans: Sequence[tuple[int, int]],
    weights: np.ndarray,
    *,
    title: str,
    outline: tuple[int, int] | None = None,
    chars_per_line: int = 100,
) -> None:
    """A text with each token's background coloured by its weight (a 1-D attention map read in place).

    Args:
        text: the full text; spans: (start, end) character span per weighted token, in order.
        weights: (len(spans),) weights, coloured on one scale from 0 to their maximum.
        outline: (first, last) token indices to outline (e.g. the predicted answer).
        chars_per_line: wrap width; tokens are laid out in a monospace grid, so widths are exact.
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    norm = Normalize(vmin=0.0, vmax=float(max(weights.max(initial=0.0), 1e-12)))
    cmap = colormaps["YlOrRd"]
    column = line = previous_end = 0
    for index, ((start, end), weight) in enumerate(zip(spans, weights, strict=True)):
        gap, piece = text[previous_end:start].replace("\n", " "), text[start:end].replace("\n", " ")
        previous_end = end
        column += len(gap)
        if column + len(piece) > chars_per_line and column > 0:  # wrap before this token
            column, line = 0, line + 1
        ax.add_patch(Rectangle((column, line), len(piece), 1, facecolor=cmap(norm(weight)), edgecolor="none"))
        if outline is not None and outline[0] <= index <= outline[1]:
            ax.add_patch(Rectangle((column, line), len(piece), 1, fill=False, edgecolor="blue", linewidth=1.5))
        ax.text(column, line + 0.5, piece, family="monospace", fontsize=7, va="center", ha="left")
        column += len(piece)
    ax.set_xlim(0, chars_per_line)
    ax.set_ylim(line + 1, 0)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.03, pad=0.02, label="attention weight")
