"""predict.py for video: video files in; the class (and its name) per clip, and with viz=true the
attention-pooling weights over every time step's patches, drawn over that step's frame."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, Value
from matplotlib.figure import Figure
from torch import Tensor, nn

from attnlab.analysis.heatmaps import overlay
from attnlab.attention import AttentionRecord
from attnlab.data.inputs import read_media_rows
from attnlab.training.predictor import TaskPredictor

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")


class VideoPredictor(TaskPredictor):
    accepts = "a video file, a directory of video files, or a saved dataset directory (video[, label] columns)"

    def read(self, source: str, options: dict[str, Any]) -> tuple[Dataset, list[str]]:
        return read_media_rows(
            source, column="video", suffixes=VIDEO_SUFFIXES, accepts=self.accepts, defaults={"label": (Value("int64"), -1)}
        )  # label -1: unknown

    @property
    def class_names(self) -> list[str] | None:
        return getattr(self.datamodule, "class_names", None)

    def annotate(self, records: list[dict[str, Any]], *, batch: dict[str, Any], outputs: dict[str, Tensor]) -> None:
        names = self.class_names
        if not names:
            return
        for record in records:
            record["prediction_text"] = names[record["prediction"]]
            if "target" in record:
                record["target_text"] = names[record["target"]]

    def capture_pattern(self, model: nn.Module) -> str:
        return rf"^heads\.{re.escape(self.task)}\.pool$"

    def draw(
        self,
        *,
        model: nn.Module,
        batch: dict[str, Any],
        outputs: dict[str, Tensor],
        captured: dict[str, list[AttentionRecord]],
        records: list[dict[str, Any]],
    ) -> list[tuple[str, Figure]]:
        adapter = model.adapters[self.task]
        steps, (grid_h, grid_w) = adapter.num_steps, adapter.grid[1:]
        pooling = captured[f"heads.{self.task}.pool"][0].weights.float().mean(1)[:, 0]  # (B, L): head mean
        per_step = pooling.shape[-1] == steps * grid_h * grid_w  # False: space_only pools a time average
        clips = batch["video"].float()  # (B, T, C, H, W), normalised
        figures = []
        for b, record in enumerate(records):
            frames = clips[b, :: adapter.tubelet_size].mean(1).cpu().numpy()  # (T', H, W): a step's first frame
            frames = (frames - frames.min()) / max(float(frames.max() - frames.min()), 1e-6)
            maps = pooling[b].view(steps if per_step else 1, grid_h, grid_w).cpu().numpy()
            label = record.get("prediction_text", record["prediction"])
            truth = record.get("target_text", record.get("target"))
            title = f"{Path(record['input']).name}: predicted {label} ({record['confidence']:.2f})" + (
                f", true {truth}" if truth is not None else ""
            )
            figure = Figure(figsize=(2.6 * steps + 0.6, 3.2), layout="constrained")
            axes = figure.subplots(1, steps, squeeze=False)[0]
            figure.suptitle(title + ("" if per_step else " - space_only: one map, averaged over time"), fontsize=10)
            for t, ax in enumerate(axes):
                weights = maps[t if per_step else 0]
                share = f", {weights.sum():.0%} of the weight" if per_step else ""
                overlay(figure, ax, (frames[t] * 255).astype(np.uint8), weights, title=f"step {t}{share}")
            figures.append((f"{Path(record['input']).stem}_{self.row_of(record)}", figure))
        return figures
