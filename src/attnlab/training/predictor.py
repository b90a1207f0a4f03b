"""The predict hook of a task: read raw inputs, and draw where the model looked.

Every task folder provides one `TaskPredictor` subclass and registers it in the entry-point group
``attnlab.predictors`` (``pyproject.toml``), so `predict.py` and the `AttentionMaps` callback serve
every task, today's and later ones, with no per-task branch:

    dataset = predictor.read(source, options)            # raw input -> rows in the task's schema
    batch = datamodule.collate(...)                      # the task's own preprocessing
    with capture_attention(model, pattern=predictor.capture_pattern(model)) as captured:
        outputs = model(batch, task)
    figures = predictor.draw(model=..., batch=..., outputs=..., captured=..., records=...)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import nullcontext
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from datasets import Dataset
from torch import Tensor, nn

from attnlab.attention import AttentionRecord

if TYPE_CHECKING:  # matplotlib is imported only where pictures are drawn
    from matplotlib.figure import Figure

PREDICTOR_ENTRY_POINTS = "attnlab.predictors"


class TaskPredictor(ABC):
    """Reads one task's raw inputs and draws its attention pictures.

    Args:
        datamodule: the task's datamodule with its checkpointed state (vocabularies) restored.
        task: the task's name in the model.
    """

    #: what `read` accepts, for error messages (e.g. "an image file, a directory of images, ...")
    accepts: str = ""
    #: whether `draw` reads the `capture_attention` records (False: it asks the model itself, e.g. a
    #: generation head's `cross_attention`, which also covers models without attention modules)
    captures: bool = True

    def __init__(self, *, datamodule: L.LightningDataModule, task: str) -> None:
        self.datamodule, self.task = datamodule, task

    @abstractmethod
    def read(self, source: str, options: dict[str, Any]) -> tuple[Dataset, list[str]]:
        """Raw input (a file, a directory, a text, a saved dataset) -> (rows in the task's schema, one
        display name per row). ``options`` are the task inputs given on the command line (e.g.
        ``question``). Raise ValueError / FileNotFoundError naming the input and the fix."""

    def remember(self, dataset: Dataset) -> None:
        """Keep what `draw` shows beside the maps for these rows (e.g. the original images); `read`
        calls it, and so does the `AttentionMaps` callback for its validation rows."""

    def row_of(self, record: dict[str, Any]) -> int:
        """The dataset row a prediction record belongs to (heads put it in ``row`` or ``index``)."""
        return int(record["row"] if "row" in record else record["index"])

    def annotate(self, records: list[dict[str, Any]], *, batch: dict[str, Any], outputs: dict[str, Tensor]) -> None:
        """Add fields or files (`FILES_KEY`) to a batch's prediction records, drawing or not (e.g. a
        segmentation mask overlaid on its image). Default: nothing."""

    def capture_pattern(self, model: nn.Module) -> str | None:
        """Regex of the attention layers `draw` needs (None: every layer)."""
        return None

    @abstractmethod
    def draw(
        self,
        *,
        model: nn.Module,
        batch: dict[str, Any],
        outputs: dict[str, Tensor],
        captured: dict[str, list[AttentionRecord]],
        records: list[dict[str, Any]],
    ) -> list[tuple[str, Figure]]:
        """One (file stem, figure) per picture; figures are closed by the caller after saving/logging."""


def run_predictor(
    predictor: TaskPredictor, model: nn.Module, batch: dict[str, Any], *, names: Sequence[str], draw: bool
) -> tuple[list[dict[str, Any]], list[tuple[str, Figure]]]:
    """One batch through `model` (in eval mode, under no_grad): its prediction records, each with its
    input's display name, and, when `draw`, the predictor's pictures from the captured attention."""
    from attnlab.attention import capture_attention

    task = predictor.task
    capture = (
        capture_attention(model, pattern=predictor.capture_pattern(model))
        if draw and predictor.captures
        else nullcontext({})
    )
    with torch.no_grad(), capture as captured:
        outputs = model(batch, task)
    records = [{"input": names[predictor.row_of(r)], **r} for r in model.heads[task].predict(outputs, batch)]
    predictor.annotate(records, batch=batch, outputs=outputs)
    if not draw:
        return records, []
    return records, predictor.draw(model=model, batch=batch, outputs=outputs, captured=captured, records=records)


def predictor_for(task: str, *, datamodule: L.LightningDataModule) -> TaskPredictor:
    """The installed predictor of `task` (entry point ``attnlab.predictors``)."""
    found = {ep.name: ep for ep in entry_points(group=PREDICTOR_ENTRY_POINTS)}
    if task not in found:
        raise ValueError(
            f"task '{task}' has no predictor registered under the entry-point group '{PREDICTOR_ENTRY_POINTS}' "
            f"(registered: {sorted(found) or 'none'}); add one to the task's package and reinstall it"
        )
    return found[task].load()(datamodule=datamodule, task=task)
