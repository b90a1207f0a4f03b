"""Metrics of generated text, on sacreBLEU and torchmetrics, with one update signature.

Every metric here is updated as ``metric.update(predictions, references, entities)`` (lists of B strings,
and per item the entity strings its reference copies, or None), so a `MetricCollection` of any of them
updates in one call. `TEXT_METRICS` names them for task configs (``head.metrics: [bleu, chrf, ...]``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import MeanMetric, Metric
from torchmetrics.text import CHRFScore, ROUGEScore, SacreBLEUScore


class CorpusBLEU(SacreBLEUScore):
    """Corpus sacreBLEU (0-100, the ``13a`` tokenizer of WMT reports), one reference per item."""

    def __init__(self) -> None:
        super().__init__(tokenize="13a")

    def update(self, preds: Sequence[str], references: Sequence[str], entities: object = None) -> None:
        super().update(list(preds), [[r] for r in references])

    def compute(self) -> Tensor:
        return super().compute() * 100.0


class CorpusChrF(CHRFScore):
    """Corpus chrF (0-100; character 6-grams, beta 2, no word n-grams: sacreBLEU's default chrF, not
    chrF++), one reference per item; robust to morphology and word splits."""

    def __init__(self) -> None:
        super().__init__(n_word_order=0)

    def update(self, preds: Sequence[str], references: Sequence[str], entities: object = None) -> None:
        super().update(list(preds), [[r] for r in references])

    def compute(self) -> Tensor:
        return super().compute() * 100.0


class RougeF(ROUGEScore):
    """Mean ROUGE F-measure (0-1) of one key: ``rouge1``, ``rouge2`` or ``rougeL`` (torchmetrics' ROUGE)."""

    def __init__(self, key: str) -> None:
        super().__init__(rouge_keys=(key,))
        self.key = key

    def update(self, preds: Sequence[str], references: Sequence[str], entities: object = None) -> None:
        super().update(list(preds), list(references))

    def compute(self) -> Tensor:
        return super().compute()[f"{self.key}_fmeasure"]


class ExactMatch(MeanMetric):
    """Share of items whose prediction equals the reference (surrounding whitespace ignored)."""

    def update(self, preds: Sequence[str], references: Sequence[str], entities: object = None) -> None:
        matches = [float(p.strip() == r.strip()) for p, r in zip(preds, references, strict=True)]
        super().update(torch.tensor(matches, dtype=torch.float32))


class EntityCopy(MeanMetric):
    """Share of reference entities (names, places, dates the reference copies from the source) that the
    prediction reproduces verbatim; items without entities do not count."""

    def update(
        self, preds: Sequence[str], references: Sequence[str], entities: Sequence[Sequence[str]] | None = None
    ) -> None:
        if entities is None:
            raise ValueError(
                "entity_copy needs each item's entities (batch['entities']); the dataset has no 'entities' "
                "column and the datamodule derived none: drop entity_copy from the head's metrics"
            )
        found = [float(entity in pred) for pred, item in zip(preds, entities, strict=True) for entity in item]
        if found:
            super().update(torch.tensor(found, dtype=torch.float32))


TEXT_METRICS: dict[str, type[Metric] | tuple[type[Metric], str]] = {
    "bleu": CorpusBLEU,
    "chrf": CorpusChrF,
    "exact_match": ExactMatch,
    "rouge1": (RougeF, "rouge1"),
    "rouge2": (RougeF, "rouge2"),
    "rougeL": (RougeF, "rougeL"),
    "entity_copy": EntityCopy,
}


def build_text_metric(name: str) -> Metric:
    """The metric `name` of `TEXT_METRICS`."""
    if name not in TEXT_METRICS:
        raise ValueError(f"text metric '{name}' is unknown; choose from {', '.join(TEXT_METRICS)}")
    spec = TEXT_METRICS[name]
    return spec[0](spec[1]) if isinstance(spec, tuple) else spec()
