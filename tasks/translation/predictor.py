"""predict.py for translation: a sentence, a .txt file (one per line) or a saved dataset in; the
translation out, with the cross-attention of each generated token over the source tokens."""

from __future__ import annotations

from datasets import Dataset

from attnlab.training.seq2seq_predictor import Seq2SeqPredictor


class TranslationPredictor(Seq2SeqPredictor):
    def rows(self, texts: list[str]) -> Dataset:
        source, target = self.datamodule.src_lang, self.datamodule.tgt_lang
        return Dataset.from_dict({"translation": [{source: text, target: ""} for text in texts]})
