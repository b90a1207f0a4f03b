"""Summarization data in the schema of ``cnn_dailymail`` (``article``, ``highlights``, ``id``): the offline
builder's news-style articles, or any hub / disk dataset (``xsum``-style names through ``data.column_map``,
e.g. ``{document: article, summary: highlights}``)."""

from __future__ import annotations

import re
from typing import Any

from datasets import Dataset, DatasetDict

from attnlab.data.seq2seq import Seq2SeqDataModule

# a run of capitalised words ("Marta Kowalska", "Banco Lisboa Group"); "of"/"de"/... may join two of them
_NAME_RUN = re.compile(r"\b[A-Z][\w'’-]*(?:[ \t]+(?:(?:of|de|da|del|van|von|der|di|la|le)[ \t]+)?[A-Z][\w'’-]*)*")


def derived_entities(highlight: str, article: str) -> list[str]:
    """Entities of a highlight when the dataset lists none: runs of capitalised words (names, places,
    organisations) that also occur verbatim in the article, except a single word opening a sentence."""
    found = []
    for match in _NAME_RUN.finditer(highlight):
        text = match.group()
        starts_sentence = match.start() == 0 or highlight[: match.start()].rstrip().endswith((".", "!", "?"))
        if (starts_sentence and " " not in text) or text not in article or text in found:
            continue
        found.append(text)
    return found


class SummarizationDataModule(Seq2SeqDataModule):
    """Article -> highlights.

    Args:
        train_size / validation_size / test_size: articles the offline builder writes per split.
        min_words / max_words: article length range of the builder.
        **kwargs: `Seq2SeqDataModule` / `HFDataModule` arguments; articles longer than
            ``max_source_len`` tokens are truncated (the log counts them per split).
    """

    task_name = "summarization"
    required_columns = ("article", "highlights")

    def __init__(
        self,
        *,
        train_size: int = 40_000,
        validation_size: int = 500,
        test_size: int = 2_000,
        min_words: int = 150,
        max_words: int = 260,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.train_size, self.validation_size, self.test_size = train_size, validation_size, test_size
        self.min_words, self.max_words = min_words, max_words

    def builder_params(self) -> dict[str, Any]:
        return {"train_size": self.train_size, "validation_size": self.validation_size, "test_size": self.test_size,
                "min_words": self.min_words, "max_words": self.max_words, "seed": self.seed}

    def build(self) -> DatasetDict:
        from tasks.summarization.builder import build_news

        return build_news(train_size=self.train_size, validation_size=self.validation_size, test_size=self.test_size,
                          seed=self.seed, min_words=self.min_words, max_words=self.max_words)

    def source_texts(self, split: Dataset) -> list[str]:
        return [text or "" for text in split["article"]]

    def target_texts(self, split: Dataset) -> list[str]:
        return [text or "" for text in split["highlights"]]

    def entities(self, split: Dataset) -> list[list[str]]:
        """The dataset's ``entities`` column, else `derived_entities` of each highlight."""
        if "entities" in split.column_names:
            return [list(items or []) for items in split["entities"]]
        return [derived_entities(h or "", a or "") for h, a in zip(split["highlights"], split["article"])]
