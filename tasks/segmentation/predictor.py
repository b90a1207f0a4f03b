"""predict.py for segmentation: images in; the predicted mask as class ids and as a colour overlay on the
image (always), and with viz=true a figure with each attention gate's coefficients over the image."""

from __future__ import annotations

import colorsys
import io
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, Features
from datasets import Image as ImageFeature
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor, nn

from attnlab.analysis.heatmaps import new_figure, overlay
from attnlab.attention import AttentionRecord
from attnlab.data.inputs import is_saved_dataset, load_saved_split, read_images
from attnlab.training.head import FILES_KEY
from attnlab.training.predictor import TaskPredictor


def palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 colours: background black, the others evenly spaced hues."""
    colours = [(0, 0, 0)] + [
        tuple(round(255 * c) for c in colorsys.hsv_to_rgb(k / max(1, num_classes - 1), 0.85, 1.0))
        for k in range(num_classes - 1)
    ]
    return np.array(colours, dtype=np.uint8)


def mask_overlay(image: Image.Image, labels: np.ndarray, colours: np.ndarray, *, opacity: float = 0.55) -> Image.Image:
    """RGB picture: `image` resized to the (H, W) mask, class colours blended over non-background pixels."""
    height, width = labels.shape
    base = np.asarray(image.convert("RGB").resize((width, height), Image.BILINEAR), dtype=np.float32)  # (H, W, 3)
    colour = colours[np.minimum(labels, len(colours) - 1)].astype(np.float32)
    blend = np.where((labels > 0)[..., None], (1 - opacity) * base + opacity * colour, base)
    return Image.fromarray(blend.round().astype(np.uint8))


class SegmentationPredictor(TaskPredictor):
    accepts = "an image file, a directory of images, or a saved dataset directory (image[, annotation] columns)"
    captures = False  # the gate coefficients come with the head's outputs

    def read(self, source: str, options: dict[str, Any]) -> tuple[Dataset, list[str]]:
        if is_saved_dataset(Path(source)):
            dataset, names = load_saved_split(Path(source))
            if "image" not in dataset.column_names:
                raise ValueError(f"input={source} has no 'image' column (it has {dataset.column_names})")
        else:
            images, names = read_images(source, accepts=self.accepts)
            dataset = Dataset.from_dict({"image": images}, features=Features({"image": ImageFeature()}))
        self.remember(dataset)
        return dataset, names

    def remember(self, dataset: Dataset) -> None:
        columns = [c for c in ("image", "annotation") if c in dataset.column_names]
        rows = list(dataset.select_columns(columns))
        self.images = [row["image"] for row in rows]
        self.annotations = [row.get("annotation") for row in rows]

    def annotate(self, records: list[dict[str, Any]], *, batch: dict[str, Any], outputs: dict[str, Tensor]) -> None:
        labels = outputs["logits"].argmax(1).cpu().numpy()  # (B, H, W)
        colours = palette(outputs["logits"].shape[1])
        for b, record in enumerate(records):
            picture = mask_overlay(self.images[self.row_of(record)], labels[b], colours)
            buffer = io.BytesIO()
            picture.save(buffer, format="PNG")
            stem = f"{Path(record['input']).stem}_{self.row_of(record)}"
            record.setdefault(FILES_KEY, {})["overlay"] = (f"overlays/{stem}.png", buffer.getvalue())

    def draw(
        self,
        *,
        model: nn.Module,
        batch: dict[str, Any],
        outputs: dict[str, Tensor],
        captured: dict[str, list[AttentionRecord]],
        records: list[dict[str, Any]],
    ) -> list[tuple[str, Figure]]:
        gates = sorted((k for k in outputs if k.startswith("gate_")), key=lambda k: int(k.split("_")[1]))
        labels = outputs["logits"].argmax(1).cpu().numpy()  # (B, H, W)
        num_classes = outputs["logits"].shape[1]
        colours = palette(num_classes)
        figures = []
        for b, record in enumerate(records):
            row = self.row_of(record)
            image, annotation = self.images[row], self.annotations[row]
            panels = 2 + (annotation is not None) + len(gates)
            figure, axes = new_figure(panels, title=f"{Path(record['input']).name}: {record['prediction']}")
            axes[0].imshow(image, cmap="gray" if image.mode == "L" else None)
            axes[0].set_title("input", fontsize=9)
            axes[1].imshow(mask_overlay(image, labels[b], colours))
            axes[1].set_title("predicted mask", fontsize=9)
            used = 2
            if annotation is not None:
                truth = np.asarray(annotation.resize(labels[b].shape[::-1], Image.NEAREST))
                axes[2].imshow(mask_overlay(image, np.where(truth < num_classes, truth, 0), colours))
                axes[2].set_title("true mask", fontsize=9)
                used = 3
            for ax in axes[:used]:
                ax.set_xticks([]), ax.set_yticks([])
            for ax, name in zip(axes[used:], gates, strict=True):
                alpha = outputs[name][b, 0].float().cpu().numpy()  # (H_l, W_l) in [0, 1]
                title = f"gate, level {name.split('_')[1]} ({alpha.shape[0]}x{alpha.shape[1]})"
                overlay(figure, ax, image, alpha, title=title, label="gate coefficient alpha")
            figures.append((f"{Path(record['input']).stem}_{row}", figure))
        return figures
