"""predict.py for summarization: an article (text, a .txt file with one article per line, or a saved
dataset) in; its summary out, with the cross-attention of each generated token over the article."""

from __future__ import annotations

from datasets import Dataset

from attnlab.training.seq2seq_predictor import Seq2SeqPredictor


class SummarizationPredictor(Seq2SeqPredictor):
    def rows(self, texts: list[str]) -> Dataset:
        return Dataset.from_dict({"article": texts, "highlights": [""] * len(texts),
                                  "id": [f"input-{i}" for i in range(len(texts))]})
