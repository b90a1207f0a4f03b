"""Attention-pooling classifier: a learned query attends over the tokens, then a linear layer."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from attnlab.attention import MultiHeadAttention
from attnlab.training import TaskHead

TOP_K = 3  # classes listed per prediction record, most probable first


class AttentionPoolingClassifier(TaskHead):
    """Pool (B, N, D) tokens with learned attention weights, classify the pooled vector.

    A learned query attends over the token sequence (multi-head cross-attention), so the pooling
    weights are input dependent and can be inspected as attention maps.

    Args:
        dim: token width D.
        num_classes: output classes.
        num_heads: heads of the pooling attention.
        dropout: dropout before the classifier.
        label_smoothing: cross-entropy label smoothing.
    """

    def __init__(
        self, *, dim: int, num_classes: int, num_heads: int = 4, dropout: float = 0.0, label_smoothing: float = 0.0
    ) -> None:
        super().__init__()
        self.num_classes, self.label_smoothing = num_classes, label_smoothing
        self.query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)  # (1, 1, D)
        self.pool = MultiHeadAttention(dim=dim, num_heads=num_heads, cross=True)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, hidden: Tensor, mask: Tensor | None, batch: dict[str, Any]) -> dict[str, Tensor]:
        query = self.query.expand(hidden.shape[0], -1, -1)  # (B, 1, D)
        pooled = self.pool(query, context=hidden, key_padding_mask=mask).squeeze(1)  # (B, D)
        return {"logits": self.classifier(self.drop(self.norm(pooled)))}  # (B, C)

    def pooling_weights(self, hidden: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, heads, N) attention weights of the pooling query over the tokens."""
        query = self.query.expand(hidden.shape[0], -1, -1)
        _, weights = self.pool(query, context=hidden, key_padding_mask=mask, need_weights=True)
        return weights.squeeze(2)

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> Tensor:
        return F.cross_entropy(outputs["logits"], batch["label"], label_smoothing=self.label_smoothing)

    def predict(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> list[dict[str, Any]]:
        probs = outputs["logits"].float().softmax(-1)  # (B, C)
        confidence, labels = probs.max(-1)
        top_p, top_i = probs.topk(min(TOP_K, self.num_classes), dim=-1)  # (B, k)
        return [  # a target < 0 means unknown (raw inputs of predict.py): left out
            {"index": int(i), "prediction": int(p), "confidence": round(float(c), 6),
             "top_k": [[int(k), round(float(kp), 6)] for k, kp in zip(ki, kpp)], **({"target": int(t)} if t >= 0 else {})}
            for i, p, c, t, ki, kpp in zip(batch["index"], labels, confidence, batch["label"], top_i.tolist(), top_p.tolist())
        ]

    def build_metrics(self) -> MetricCollection:
        return MetricCollection({"acc": MulticlassAccuracy(num_classes=self.num_classes, average="micro")})

    def metric_inputs(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        return outputs["logits"], batch["label"]
