"""predict.py for image classification: images in; the pooling query's attention and its rollout through
the backbone (Abnar & Zuidema 2020) over the patches, overlaid on the image, with the labels."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from datasets import Dataset, Features, Value
from datasets import Image as ImageFeature
from matplotlib.figure import Figure
from torch import Tensor, nn

from attnlab.analysis.heatmaps import as_grid, new_figure, overlay, square_grid
from attnlab.analysis.rollout import attention_rollout
from attnlab.attention import AttentionRecord
from attnlab.data.inputs import is_saved_dataset, load_saved_split, read_images
from attnlab.training.predictor import TaskPredictor

_BLOCK = re.compile(r"^backbone\.blocks\.(\d+)\.attn$")


class ImageClassificationPredictor(TaskPredictor):
    accepts = "an image file, a directory of images, or a saved dataset directory (image, label columns)"

    def read(self, source: str, options: dict[str, Any]) -> tuple[Dataset, list[str]]:
        if is_saved_dataset(Path(source)):
            dataset, names = load_saved_split(Path(source))
            if "image" not in dataset.column_names:
                raise ValueError(f"input={source} has no 'image' column (it has {dataset.column_names})")
            if "label" not in dataset.column_names:
                dataset = dataset.add_column("label", [-1] * len(dataset))
        else:
            images, names = read_images(source, accepts=self.accepts)
            features = Features({"image": ImageFeature(), "label": Value("int64")})
            dataset = Dataset.from_dict({"image": images, "label": [-1] * len(images)}, features=features)  # -1: unknown
        self.remember(dataset)
        return dataset, names

    def remember(self, dataset: Dataset) -> None:
        self.images = [row["image"] for row in dataset.select_columns(["image"])]  # shown under the maps

    def capture_pattern(self, model: nn.Module) -> str:
        return rf"^(heads\.{re.escape(self.task)}\.pool|backbone\.blocks\.\d+\.attn)$"

    def draw(
        self,
        *,
        model: nn.Module,
        batch: dict[str, Any],
        outputs: dict[str, Tensor],
        captured: dict[str, list[AttentionRecord]],
        records: list[dict[str, Any]],
    ) -> list[tuple[str, Figure]]:
        pooling = captured[f"heads.{self.task}.pool"][0].weights.mean(1)[:, 0]  # (B, N): head mean of the query
        blocks = sorted((int(_BLOCK.match(n).group(1)), r[0].weights) for n, r in captured.items() if _BLOCK.match(n))
        rollout = attention_rollout([w for _, w in blocks]) if blocks else None  # (B, N, N) or None (timm CNN)
        adapter = model.adapters[self.task]
        takes_pixels = getattr(model.backbone, "takes_pixels", False)
        grid = square_grid(pooling.shape[-1]) if takes_pixels else tuple(adapter.grid_size)
        figures = []
        for b, record in enumerate(records):
            image = self.images[self.row_of(record)]
            target = record.get("target")
            label = f"predicted {record['prediction']} ({record['confidence']:.2f})" + (
                f", true {target}" if target is not None else ""
            )
            figure, axes = new_figure(3 if rollout is not None else 2, title=f"{Path(record['input']).name}: {label}")
            axes[0].imshow(image, cmap="gray" if image.mode == "L" else None)
            axes[0].set_title("input", fontsize=9)
            axes[0].set_xticks([]), axes[0].set_yticks([])
            overlay(figure, axes[1], image, as_grid(pooling[b], grid), title="attention pooling (heads averaged)")
            if rollout is not None:
                traced = pooling[b] @ rollout[b]  # (N,): the pooling query traced back to the input patches
                overlay(figure, axes[2], image, as_grid(traced, grid), title=f"rollout through {len(blocks)} blocks",
                        label="rolled-out weight")
            figures.append((f"{Path(record['input']).stem}_{self.row_of(record)}", figure))
        return figures
