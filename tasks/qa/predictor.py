"""predict.py for extractive QA: ``context="..." question="..."`` (or a .txt context, or a saved SQuAD-schema
dataset) in; the answer span out, and where the question looked in the context: the encoder's last-block
attention from the question tokens over the context tokens (over its sentences with the sentence-memory
route; with BiDAF also its question-to-context attention), drawn over the context text with the answer
outlined."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datasets import Dataset, Features, Value
from datasets import Sequence as HFSequence
from torch import Tensor, nn

from attnlab.attention import AttentionRecord
from attnlab.data.inputs import is_saved_dataset, load_saved_split
from attnlab.training.predictor import TaskPredictor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FEATURES = Features(
    {
        "id": Value("string"),
        "context": Value("string"),
        "question": Value("string"),
        "answers": HFSequence({"text": Value("string"), "answer_start": Value("int32")}),
    }
)


class QAPredictor(TaskPredictor):
    accepts = (
        'context="..." (or input=<context .txt file>) together with question="...", or input=<saved dataset '
        "directory> in the SQuAD schema (context, question[, answers])"
    )

    def read(self, source: str, options: dict[str, Any]) -> tuple[Dataset, list[str]]:
        if source and is_saved_dataset(Path(source)):
            dataset, names = load_saved_split(Path(source))
            missing = [c for c in ("context", "question") if c not in dataset.column_names]
            if missing:
                raise ValueError(f"input={source} lacks column(s) {missing} (it has {dataset.column_names})")
            if "answers" not in dataset.column_names:
                dataset = dataset.add_column("answers", [{"text": [], "answer_start": []}] * len(dataset))
            return dataset, names
        question = options.get("question")
        context = options.get("context") or source
        if not question or not context:
            raise ValueError(f"QA needs a context and a question: give {self.accepts}")
        path = Path(context)
        if path.suffix.lower() == ".txt" or (len(context) < 256 and path.is_file()):
            if not path.is_file():
                raise FileNotFoundError(f"context file {context} does not exist; give {self.accepts}")
            context = path.read_text(encoding="utf-8").strip()
        dataset = Dataset.from_dict(
            {"id": ["0"], "context": [context], "question": [str(question)], "answers": [{"text": [], "answer_start": []}]},
            features=FEATURES,
        )
        return dataset, [str(question)]

    def capture_pattern(self, model: nn.Module) -> str:
        return rf"^backbone\.blocks\.{len(model.backbone.blocks) - 1}\.attn$"

    def draw(
        self,
        *,
        model: nn.Module,
        batch: dict[str, Any],
        outputs: dict[str, Tensor],
        captured: dict[str, list[AttentionRecord]],
        records: list[dict[str, Any]],
    ) -> list[tuple[str, Figure]]:
        from matplotlib.figure import Figure

        from attnlab.analysis.heatmaps import text_heatmap

        slots = int(batch["question_slots"])
        (last_block,) = captured.values()
        weights = last_block[0].weights.float()  # (F, H, N, N)
        question_mask = batch["question_mask"][:, :slots].float()  # (F, M)
        # question tokens -> every key, heads averaged, then averaged over the real question tokens
        from_question = (weights[:, :, :slots].mean(1) * question_mask[..., None]).sum(1)  # (F, N)
        from_question = from_question / question_mask.sum(1, keepdim=True).clamp(min=1)
        route = model.routes[self.task]
        unit = "tokens"
        if hasattr(route, "token_view"):  # sentence memories: each context token shows its sentence's weight
            from_question, unit = route.token_view(from_question, batch), "sentences"  # (F, N)
        q2c = outputs.get("question_to_context")  # (F, N), BiDAF heads only
        figures = []
        for example, record in enumerate(records):  # one record per question, in batch order
            feature = _answer_window(batch, example, record["answer_start"])
            offsets = batch["offsets"][feature]
            context = batch["contexts"][example]
            context_weights = from_question[feature, slots : slots + len(offsets)].cpu().numpy()
            outline = _token_range(offsets, record["answer_start"], len(record["prediction_text"]))
            panels = [(f"encoder's last block: question tokens -> context {unit} (heads and question tokens averaged)",
                       context_weights)]
            if q2c is not None:
                panels.append(("BiDAF question-to-context attention", q2c[feature, slots : slots + len(offsets)].cpu().numpy()))
            lines = max(1, len(context) // 100 + 2)
            figure = Figure(figsize=(12, 1.2 + len(panels) * (0.6 + 0.22 * lines)), layout="constrained")
            axes = figure.subplots(len(panels), 1, squeeze=False)[:, 0]
            answer = record["prediction_text"]
            figure.suptitle(f"Q: {batch['questions'][example]}   A: {answer!r}", fontsize=10)
            for ax, (title, values) in zip(axes, panels, strict=True):
                text_heatmap(figure, ax, context, offsets, values, title=title, outline=outline)
            stem = re.sub(r"[^\w-]+", "_", record["input"]).strip("_")[:40] or "question"
            figures.append((f"{stem}_{record['index']}", figure))
        return figures


def _answer_window(batch: dict[str, Any], example: int, answer_start: int) -> int:
    """The feature (window) of `example` that holds the answer's first character (else its first window)."""
    features = [f for f, e in enumerate(batch["feature_example"].tolist()) if e == example]
    for feature in features:
        offsets = batch["offsets"][feature]
        if offsets and offsets[0][0] <= answer_start < offsets[-1][1]:
            return feature
    return features[0]


def _token_range(offsets: list[tuple[int, int]], start: int, length: int) -> tuple[int, int] | None:
    """First and last token of a window overlapping characters [start, start + length)."""
    inside = [t for t, (a, b) in enumerate(offsets) if b > a and a < start + length and b > start]
    return (inside[0], inside[-1]) if inside and length > 0 else None
