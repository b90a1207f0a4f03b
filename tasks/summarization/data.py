"""Summarization data in the schema of ``cnn_dailymail`` (``article``, ``highlights``, ``id``): the offline
builder's news-style articles, or any hub / disk dataset (``xsum``-style names through ``data.column_map``,
e.g. ``{document: article, summary: highlights}``)."""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from typing import Any

from datasets import Dataset, DatasetDict

from attnlab.data.seq2seq import Seq2SeqDataModule

log = logging.getLogger(__name__)

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


_WORD = re.compile(r"[^\W\d_][\w'’-]*")
_VOWELS, _RARE_VOWELS = "aeiouy", "áéíóúäëïöüåøæãõâêîôûàèìòùąęőı"
_CONSONANTS, _RARE_CONSONANTS = "bcdfghjklmnprstvwz", "ćčďđğłńňřśşšťźżñçß"
_RARE_LETTER = 0.08  # share of letters with diacritics, about that of the builder's names
SHARED_ENTITY_SHARE = 0.005  # entity words in more rows than this (suffixes, months) are kept


def pseudo_word(rng: random.Random, like: str) -> str:
    """A capitalised made-up word of about `like`'s length: alternating consonants and vowels (doubled now
    and then), a few of them with diacritics."""
    letters, vowel = [], rng.random() < 0.3
    for _ in range(max(3, len(like) + rng.randint(-1, 1))):
        rare = rng.random() < _RARE_LETTER
        pool = (_RARE_VOWELS if rare else _VOWELS) if vowel else (_RARE_CONSONANTS if rare else _CONSONANTS)
        letters.append(rng.choice(pool))
        vowel = not vowel if rng.random() < 0.85 else vowel
    return "".join(letters).capitalize()


def swap_entities(rows: Dataset, *, seed: int) -> Dataset:
    """Rename the entity words of every row to fresh made-up words, the same way in article, highlights and
    entities: names then never repeat across training rows, so the model can only reproduce them by copying.

    Entity words shared by many rows (organisation suffixes, months: more than `SHARED_ENTITY_SHARE` of the
    rows) are kept; so are numbers.
    """
    counts = Counter(word for items in rows["entities"] for word in {w for e in items for w in _WORD.findall(e)})
    shared = {word for word, count in counts.items() if count > SHARED_ENTITY_SHARE * len(rows)}

    def rename(row: dict[str, Any], index: int) -> dict[str, Any]:
        rng = random.Random(f"{seed}/{index}")
        words = {w for e in row["entities"] for w in _WORD.findall(e) if w[0].isupper() and w not in shared}
        if not words:
            return row
        mapping = {word: pseudo_word(rng, word) for word in sorted(words)}
        pattern = re.compile(r"(?<![\w'’-])(" + "|".join(map(re.escape, sorted(words, key=len, reverse=True))) + r")(?![\w'’])")
        swap = lambda text: pattern.sub(lambda m: mapping[m.group(1)], text)
        return {**row, "article": swap(row["article"]), "highlights": swap(row["highlights"]),
                "entities": [swap(e) for e in row["entities"]]}

    return rows.map(rename, with_indices=True, desc="swapping entity names")


class SummarizationDataModule(Seq2SeqDataModule):
    """Article -> highlights.

    Args:
        train_size / validation_size / test_size: articles the offline builder writes per split.
        min_words / max_words: article length range of the builder.
        entity_swap: train on rows whose entity names (``entities`` column) are renamed to fresh made-up
            words per row (`swap_entities`): names never repeat, so they cannot be memorised and must be
            copied. Validation and test rows are never changed; datasets without ``entities`` are left as
            they are.
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
        entity_swap: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.entity_swap = entity_swap
        self.train_size, self.validation_size, self.test_size = train_size, validation_size, test_size
        self.min_words, self.max_words = min_words, max_words

    def builder_params(self) -> dict[str, Any]:
        return {"train_size": self.train_size, "validation_size": self.validation_size, "test_size": self.test_size,
                "min_words": self.min_words, "max_words": self.max_words, "seed": self.seed}

    def build(self) -> DatasetDict:
        from tasks.summarization.builder import build_news

        return build_news(train_size=self.train_size, validation_size=self.validation_size, test_size=self.test_size,
                          seed=self.seed, min_words=self.min_words, max_words=self.max_words)

    def prepare(self, dataset: DatasetDict) -> DatasetDict:
        if self.entity_swap and "train" in dataset:
            if "entities" in dataset["train"].column_names:
                dataset["train"] = swap_entities(dataset["train"], seed=self.seed)
            else:  # e.g. cnn_dailymail: nothing says which words are names
                log.info("data.entity_swap: %s has no 'entities' column; training rows are used as they are", self.origin)
        return super().prepare(dataset)

    def source_texts(self, split: Dataset) -> list[str]:
        return [text or "" for text in split["article"]]

    def target_texts(self, split: Dataset) -> list[str]:
        return [text or "" for text in split["highlights"]]

    def entities(self, split: Dataset) -> list[list[str]]:
        """The dataset's ``entities`` column, else `derived_entities` of each highlight."""
        if "entities" in split.column_names:
            return [list(items or []) for items in split["entities"]]
        return [derived_entities(h or "", a or "") for h, a in zip(split["highlights"], split["article"])]
