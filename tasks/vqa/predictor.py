"""predict.py for VQA: images and a question in; where the question looked in the image, and what the
most-attended image token itself attended to in the geometric relation layer, with the answer."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from datasets import Dataset, Features, Value
from datasets import Image as ImageFeature
from matplotlib.figure import Figure
from torch import Tensor, nn

from attnlab.analysis.heatmaps import as_grid, mark_cell, new_figure, overlay, square_grid
from attnlab.attention import AttentionRecord
from attnlab.data.inputs import is_saved_dataset, load_saved_split, read_images
from attnlab.training.predictor import TaskPredictor
from tasks.vqa.data import UNK, human_answers, tokenize


class VQAPredictor(TaskPredictor):
    accepts = (
        "an image file or a directory of images together with question=\"...\", or a saved dataset directory "
        "(image, question[, answer] columns)"
    )

    def read(self, source: str, options: dict[str, Any]) -> tuple[Dataset, list[str]]:
        if is_saved_dataset(Path(source)):
            dataset, names = load_saved_split(Path(source))
            missing = [c for c in ("image", "question") if c not in dataset.column_names]
            if missing:
                raise ValueError(f"input={source} lacks column(s) {missing} (it has {dataset.column_names})")
            if "answer" not in dataset.column_names and "answers" not in dataset.column_names:
                dataset = dataset.add_column("answer", [""] * len(dataset))
        else:
            question = options.get("question")
            if not question:
                raise ValueError(f"input={source}: VQA needs a question for the image(s); add question=\"...\"")
            images, names = read_images(source, accepts=self.accepts)
            features = Features(
                {"image": ImageFeature(), "question": Value("string"), "answer": Value("string"), "image_id": Value("int64")}
            )
            dataset = Dataset.from_dict(
                {"image": images, "question": [question] * len(images), "answer": [""] * len(images),
                 "image_id": list(range(len(images)))},
                features=features,
            )
        for question in sorted(set(dataset["question"])):
            self._check_words(question)
        self.remember(dataset)
        return dataset, names

    def remember(self, dataset: Dataset) -> None:
        self.images = [row["image"] for row in dataset.select_columns(["image"])]
        self.answers = [", ".join(a for a in human_answers(row) if a) for row in dataset.remove_columns("image")]

    def _check_words(self, question: str) -> None:
        words = tokenize(question)
        unknown = [w for w in words if w not in self.datamodule.word_index or w == UNK]
        if words and len(unknown) == len(words):
            raise ValueError(
                f"question='{question}' has no word the model knows ({len(unknown)} of {len(words)} words unknown; "
                f"its vocabulary has {len(self.datamodule.words)} words, e.g. "
                f"{', '.join(self.datamodule.words[3:9])}); ask with those words"
            )
        if not words:
            raise ValueError("question='' is empty; ask a question about the image")

    def capture_pattern(self, model: nn.Module) -> str:
        task = re.escape(self.task)
        return rf"^(routes\.{task}\.(fusion\.blocks\.\d+\.text_attn|relations\.\d+\.attn)|backbone\.blocks\.\d+\.attn)$"

    def _question_maps(self, model: nn.Module, batch: dict[str, Any], captured: dict[str, list[AttentionRecord]]) -> Tensor | None:
        """(B*Q, N) the question's attention over the image tokens (heads averaged), or None (concat: no attention)."""
        fusion = model.routes[self.task].fusion_kind
        if fusion == "cross":
            names = sorted(n for n in captured if ".text_attn" in n)
            return captured[names[-1]][0].weights.mean(1)[:, 0]  # last block: (B*Q, H, 1, N) -> (B*Q, N)
        if fusion == "joint":
            last = max((n for n in captured if n.startswith("backbone.blocks.")), key=lambda n: int(n.split(".")[2]))
            length = batch["question_tokens"].shape[-1]
            return captured[last][0].weights.mean(1)[:, 0, length:]  # CLS row, image keys: (B*Q, N)
        return None

    def draw(
        self,
        *,
        model: nn.Module,
        batch: dict[str, Any],
        outputs: dict[str, Tensor],
        captured: dict[str, list[AttentionRecord]],
        records: list[dict[str, Any]],
    ) -> list[tuple[str, Figure]]:
        question_maps = self._question_maps(model, batch, captured)
        relation_names = sorted(n for n in captured if ".relations." in n)
        relations = captured[relation_names[0]][0].weights.mean(1) if relation_names else None  # (B, N, N)
        mask = batch["question_mask"]  # (B, Q): records follow its True entries in row-major order
        pairs = [(b, q) for b in range(mask.shape[0]) for q in range(mask.shape[1]) if mask[b, q]]
        figures = []
        for (b, q), record in zip(pairs, records):
            row = self.row_of(record)
            image = self.images[row]
            truth = self.answers[row]
            title = f"Q: {record['question']}\nA: {record['prediction']} ({record['confidence']:.2f})" + (
                f", true: {truth}" if truth else ""
            )
            panels = 2 if question_maps is not None and relations is not None else 1
            figure, axes = new_figure(panels, title=title)
            if question_maps is None:
                axes[0].imshow(image)
                axes[0].set_title("concat fusion: no attention to show", fontsize=9)
                axes[0].set_xticks([]), axes[0].set_yticks([])
                figures.append((f"{Path(record['input']).stem}_{row}", figure))
                continue
            weights = question_maps[b * mask.shape[1] + q]  # (N,)
            grid = square_grid(weights.numel())
            top = int(weights.argmax())
            overlay(figure, axes[0], image, as_grid(weights, grid), title="question -> image tokens")
            size = (image.height, image.width)
            mark_cell(axes[0], top // grid[1], top % grid[1], grid=grid, size=size)
            if relations is not None:
                overlay(figure, axes[1], image, as_grid(relations[b, top], grid),
                        title="relation layer: from the outlined token")
                mark_cell(axes[1], top // grid[1], top % grid[1], grid=grid, size=size)
            figures.append((f"{Path(record['input']).stem}_{row}", figure))
        return figures
