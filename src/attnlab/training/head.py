"""The head contract every task implements (see DESIGN.md, "Core contracts")."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from torch import Tensor, nn
from torchmetrics import MetricCollection

#: a prediction record may carry files under this key, ``{field: (relative path, bytes)}`` (e.g. a
#: predicted mask as PNG); eval.py and predict.py write them beside predictions.jsonl and keep
#: ``field: relative path`` in the record instead
FILES_KEY = "_files"


class TaskHead(nn.Module, ABC):
    """Maps backbone features to task outputs and owns the task's loss, decoding and metrics.

    Attributes:
        metric_stages: the stages whose metrics are computed and logged (a generation head scores
            only val / test: generating text at every training step would dominate the run).
    """

    metric_stages: tuple[str, ...] = ("train", "val", "test")

    def tie_to_adapter(self, adapter: nn.Module) -> None:
        """Called once with the task's built adapter: share weights with it (e.g. one token embedding
        for source, target and output in a sequence-to-sequence head). Default: nothing shared."""

    def bind_data(self, datamodule: Any) -> None:
        """Called by the module's ``setup`` with the trainer's datamodule (None when the loaders come
        another way): take what the head needs from the data (e.g. the lexicon of the training
        transcripts for a speech decoder; keep it in the head's state so checkpoints carry it).
        Default: nothing."""

    @abstractmethod
    def forward(self, hidden: Tensor, mask: Tensor | None, batch: dict[str, Any]) -> dict[str, Tensor]:
        """hidden (B, N, D), mask (B, N) bool | None -> named output tensors."""

    @abstractmethod
    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> Tensor:
        """Scalar training loss."""

    @abstractmethod
    def predict(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> list[dict[str, Any]]:
        """One JSON-serialisable record per prediction (written to predictions.jsonl), carrying the
        dataset row it belongs to as ``index`` (or ``row`` when a sample holds several predictions).
        Binary outputs (masks) go under `FILES_KEY` as ``{field: (relative path, bytes)}``."""

    @abstractmethod
    def build_metrics(self) -> MetricCollection:
        """A fresh torchmetrics collection; the module clones one per stage."""

    def metric_inputs(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """(preds, target) for the metric collection: what the default `update_metrics` feeds it. A head
        implements this or overrides `update_metrics` (e.g. generation heads score decoded text)."""
        raise TypeError(
            f"{type(self).__name__} implements neither metric_inputs nor update_metrics; implement one of them"
        )

    def update_metrics(self, metrics: MetricCollection, outputs: dict[str, Tensor], batch: dict[str, Any]) -> None:
        """Override when one (preds, target) pair is not enough (e.g. per-group accuracies)."""
        metrics.update(*self.metric_inputs(outputs, batch))
