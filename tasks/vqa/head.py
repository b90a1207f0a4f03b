"""VQA head: the route's per-question features -> answer logits; VQA accuracy overall and per group."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection

from attnlab.training import TaskHead
from tasks.vqa.builder import FAMILIES
from tasks.vqa.data import QUESTION_TYPES

TOP_K = 3  # answers listed per prediction record, most probable first


def vqa_scores(predicted: Tensor, answer_ids: Tensor) -> Tensor:
    """VQA accuracy per question: min(#human answers equal to the prediction / 3, 1).

    predicted (Q,) answer ids; answer_ids (Q, K) human answers' ids, -2 for answers outside the
    vocabulary (they count as given, never as matched), -1 for padding. With fewer than 3 human
    answers the bar is their number, so one reference answer (Sort-of-CLEVR) gives exact match.
    """
    matches = (answer_ids == predicted[:, None]).sum(-1).float()  # (Q,)
    given = (answer_ids != -1).sum(-1).clamp(min=1, max=3).float()
    return (matches / given).clamp(max=1.0)


class GroupMeanScore(Metric):
    """Mean per-question score over the questions of one group (all, a question type or a family).

    update(scores (Q,), family (Q,), question_type (Q,)); ``family`` / ``question_type`` select the
    group (None = every question). An empty group computes NaN.
    """

    full_state_update = False

    def __init__(self, *, family: int | None = None, question_type: int | None = None) -> None:
        super().__init__()
        self.family, self.question_type = family, question_type
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, scores: Tensor, family: Tensor, question_type: Tensor) -> None:
        keep = torch.ones_like(scores, dtype=torch.bool)
        if self.family is not None:
            keep &= family == self.family
        if self.question_type is not None:
            keep &= question_type == self.question_type
        self.total += scores[keep].double().sum()
        self.count += keep.sum()

    def compute(self) -> Tensor:
        return (self.total / self.count).float() if self.count > 0 else torch.tensor(float("nan"))


class VQAHead(TaskHead):
    """The answer classifier over the route's per-question features (`VQARoute`), and VQA's metrics.

    Args:
        dim: feature width F (the route's ``out_dim``).
        num_answers: answer-vocabulary capacity (classifier width).
        families: question families to report accuracy for (Sort-of-CLEVR's by default; [] for VQAv2).
        hidden_dim: classifier MLP width (default 2F).
        dropout: before the last layer.
        label_smoothing: cross-entropy label smoothing.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_answers: int = 16,
        families: tuple[str, ...] = FAMILIES,
        hidden_dim: int | None = None,
        dropout: float = 0.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        unknown = [f for f in families if f not in FAMILIES]
        if unknown:
            raise ValueError(f"unknown question families {unknown}; known: {FAMILIES}")
        self.num_answers, self.families = num_answers, tuple(families)
        self.label_smoothing = label_smoothing
        hidden_dim = hidden_dim or 2 * dim
        self.classifier = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Linear(hidden_dim, num_answers),
        )

    def forward(self, hidden: Tensor, mask: Tensor | None, batch: dict[str, Any]) -> dict[str, Tensor]:
        """hidden (B, Q, F) fused features per question, mask (B, Q) real questions -> logits (B, Q, A)."""
        return {"logits": self.classifier(hidden)}

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> Tensor:
        logits, target = outputs["logits"], batch["answer"]  # (B, Q, A), (B, Q): -100 = padding / unknown answer
        if not (target != -100).any():
            return logits.sum() * 0.0  # no answer in the vocabulary: nothing to learn from
        return F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), label_smoothing=self.label_smoothing)

    def _selected(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """(predicted ids (Q,), confidence (Q,)) over the real questions, row-major."""
        probs = outputs["logits"].float().softmax(-1)[batch["question_mask"]]  # (Q, A)
        confidence, predicted = probs.max(-1)
        return predicted, confidence

    def update_metrics(self, metrics: MetricCollection, outputs: dict[str, Tensor], batch: dict[str, Any]) -> None:
        mask = batch["question_mask"]
        predicted, _ = self._selected(outputs, batch)
        scores = vqa_scores(predicted, batch["answer_ids"][mask])
        metrics.update(scores, batch["question_family"][mask], batch["question_type"][mask])

    def metric_inputs(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        mask = batch["question_mask"]
        return self._selected(outputs, batch)[0], batch["answer"][mask]

    def build_metrics(self) -> MetricCollection:
        metrics: dict[str, Metric] = {"acc": GroupMeanScore()}
        if self.families:
            metrics["acc_relational"] = GroupMeanScore(question_type=QUESTION_TYPES.index("relational"))
            metrics["acc_nonrelational"] = GroupMeanScore(question_type=QUESTION_TYPES.index("non-relational"))
            for family in self.families:
                metrics[f"acc/{family}"] = GroupMeanScore(family=FAMILIES.index(family))
        return MetricCollection(metrics, compute_groups=False)

    def predict(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> list[dict[str, Any]]:
        """One record per question; ``prediction`` is the answer id (the datamodule's vocabulary names it)."""
        mask = batch["question_mask"]
        predicted, confidence = self._selected(outputs, batch)
        scores = vqa_scores(predicted, batch["answer_ids"][mask])
        questions = [q for per_image in batch["questions"] for q in per_image]
        names = batch["answer_names"]
        probs = outputs["logits"].float().softmax(-1)[mask]  # (Q, A)
        top_p, top_i = probs.topk(min(TOP_K, probs.shape[-1]), dim=-1)  # (Q, k)

        def name(index: int) -> str | None:
            return names[index] if index < len(names) else None  # a class the vocabulary never filled

        return [
            {"row": int(r), "question": q, "prediction": name(p), "confidence": round(float(c), 6), "score": float(s),
             "top_k": [[name(i), round(float(pi), 6)] for i, pi in zip(ti.tolist(), tp.tolist())]}
            for r, q, p, c, s, ti, tp in zip(
                batch["row"][mask].tolist(), questions, predicted.tolist(), confidence, scores, top_i, top_p
            )
        ]
