"""The predict hook shared by text-to-text tasks: texts in, generated text out, and the decoder's
cross-attention (generated tokens x source tokens) as a heatmap.

A task subclass only says how raw texts become rows of its schema (`rows`); the datamodule's tokenizer
(restored from the checkpoint) and the head's `cross_attention` do the rest, for transformer and
recurrent (Bahdanau) decoders alike.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datasets import Dataset
from torch import Tensor, nn

from attnlab.attention import AttentionRecord
from attnlab.data.inputs import is_saved_dataset, load_saved_split
from attnlab.training.predictor import TaskPredictor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_TICK_LABELS = 60  # longer axes label every k-th token


class Seq2SeqPredictor(TaskPredictor):
    """Reads a text, a .txt file (one input per line) or a saved dataset; draws cross-attention maps."""

    accepts = "a text, a .txt file with one input per line, or a saved dataset directory in the task's schema"
    captures = False  # the head recomputes its decoder's cross-attention (`Seq2SeqHead.cross_attention`)

    @abstractmethod
    def rows(self, texts: list[str]) -> Dataset:
        """Raw source texts -> rows in the task's schema (with empty references)."""

    def read(self, source: str, options: dict[str, Any]) -> tuple[Dataset, list[str]]:
        path = Path(source)
        if is_saved_dataset(path):
            return load_saved_split(path)
        if path.is_file():
            if path.suffix.lower() not in (".txt", ""):
                raise ValueError(f"input={source} is a {path.suffix} file; give {self.accepts}")
            texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            if not texts:
                raise ValueError(f"input={source} has no non-empty line; give {self.accepts}")
            return self.rows(texts), [f"{path.name}:{i + 1}" for i in range(len(texts))]
        if not source.strip():
            raise ValueError(f"input is empty; give {self.accepts}")
        if path.suffix.lower() == ".txt" or ("/" in source and " " not in source):
            raise FileNotFoundError(f"input={source} looks like a file but does not exist; give {self.accepts}")
        return self.rows([source]), [source if len(source) <= 40 else source[:37] + "..."]

    def draw(
        self,
        *,
        model: nn.Module,
        batch: dict[str, Any],
        outputs: dict[str, Tensor],
        captured: dict[str, list[AttentionRecord]],
        records: list[dict[str, Any]],
    ) -> list[tuple[str, Figure]]:
        import torch
        from matplotlib.figure import Figure

        from attnlab.analysis.heatmaps import token_heatmap

        head = model.heads[self.task]
        tokenizer = batch["tokenizer"]
        figures = []
        for b, record in enumerate(records):
            generated = torch.tensor([record["ids"] or [head.eos_id]], device=outputs["memory"].device)  # (1, T)
            memory, memory_mask = outputs["memory"][b : b + 1], outputs["memory_mask"][b : b + 1]
            with torch.no_grad():
                source = outputs["source_ids"][b : b + 1] if "source_ids" in outputs else None  # (1, S) pointer ids
                layers = head.cross_attention(memory, memory_mask, generated, source)  # L x (1, H, T, S)
            source_ids = batch["source_tokens"][b][memory_mask[0]].tolist()
            weights = layers[-1][0].float().mean(0)[:, : len(source_ids)].cpu().numpy()  # (T, S) last layer, heads averaged
            keys = _thin([tokenizer.id_to_token(i) for i in source_ids])
            queries = _thin([tokenizer.id_to_token(i) for i in generated[0].tolist()])
            width = min(24.0, max(6.0, 3.0 + 0.16 * len(keys)))
            height = min(16.0, 2.5 + 0.2 * len(queries))
            figure = Figure(figsize=(width, height), layout="constrained")
            ax = figure.subplots()
            kind = "last decoder layer, heads averaged" if len(layers) > 1 or layers[-1].shape[1] > 1 else "additive attention"
            token_heatmap(figure, ax, weights, query_labels=queries, key_labels=keys,
                          title=f"cross-attention ({kind})\n{_short(record['source'])} -> {_short(record['prediction'])}")
            ax.set_xlabel("source tokens")
            ax.set_ylabel("generated tokens")
            stem = re.sub(r"[^\w-]+", "_", record["input"]).strip("_")[:40] or "input"
            figures.append((f"{stem}_{record['index']}", figure))
        return figures


def _thin(labels: list[str]) -> list[str]:
    """Blank all but every k-th label of a long axis, so the rest stay legible."""
    step = max(1, -(-len(labels) // MAX_TICK_LABELS))
    return [label if i % step == 0 else "" for i, label in enumerate(labels)]


def _short(text: str, limit: int = 70) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
