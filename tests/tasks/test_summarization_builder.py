"""The news summarization builder: schema, determinism, copied entities, unseen names, distractors, variety.

Name checks work on word sequences (``\\w+`` runs): a name occurs in a text as whole words (regex
``\\bname\\b``) only if its word sequence occurs in the text's, so a name whose word sequence is
absent is absent as a whole-word match too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from datasets import Features, Sequence, Value
from tasks.summarization.builder import EVENTS, LAYOUTS, MONTHS, build_news, split_pools, stories

from attnlab.data import dataset_fingerprint

SIZES = {"train_size": 400, "validation_size": 50, "test_size": 100}
MIN_WORDS, MAX_WORDS = 150, 260
DATE = re.compile(r"\b(" + "|".join(MONTHS) + r")\b")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dataset():
    return build_news(**SIZES, seed=0)


@pytest.fixture(scope="module")
def rows(dataset):
    return {split: dataset[split].to_list() for split in dataset}


@pytest.fixture(scope="module")
def pools():
    return split_pools(0)


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def word_ngrams(texts, longest: int = 4) -> set[tuple[str, ...]]:
    grams = set()
    for text in texts:
        tokens = words(text)
        for n in range(1, longest + 1):
            grams.update(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return grams


def test_schema_and_ids(dataset):
    assert list(dataset) == ["train", "validation", "test"]
    expected = Features(
        {
            "article": Value("string"),
            "highlights": Value("string"),
            "id": Value("string"),
            "entities": Sequence(Value("string")),
        }
    )
    for split, size in zip(dataset, SIZES.values(), strict=True):
        assert dataset[split].features == expected
        assert dataset[split].num_rows == size
        assert all(row_id.startswith(f"{split}-") for row_id in dataset[split]["id"])
    ids = [row_id for split in dataset for row_id in dataset[split]["id"]]
    assert len(set(ids)) == len(ids)


def test_deterministic(dataset):
    assert dataset_fingerprint(build_news(**SIZES, seed=0)) == dataset_fingerprint(dataset)
    assert dataset_fingerprint(build_news(**SIZES, seed=1)) != dataset_fingerprint(dataset)


def test_deterministic_across_hash_seeds():
    """Another process with another PYTHONHASHSEED builds the same rows (no hash() or set order)."""
    code = (
        "from tasks.summarization.builder import build_news; from attnlab.data import dataset_fingerprint; "
        "print(dataset_fingerprint(build_news(train_size=60, validation_size=10, test_size=20, seed=3)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    here = dataset_fingerprint(build_news(train_size=60, validation_size=10, test_size=20, seed=3))
    assert other.stdout.strip() == here


def test_articles_and_highlights_shape(rows):
    for split_rows in rows.values():
        for row in split_rows:
            article_words = len(row["article"].split())
            assert MIN_WORDS <= article_words <= MAX_WORDS + 30, row["id"]
            paragraphs = row["article"].split("\n\n")
            assert len(paragraphs) >= 3 and all(p.strip() == p and p for p in paragraphs), row["id"]
            sentences = re.split(r"(?<=[.!?])\s+", row["highlights"].strip())
            assert 1 <= len(sentences) <= 2 and all(s[-1] in ".!?" for s in sentences), row["highlights"]
            assert 10 <= len(row["highlights"].split()) <= 40, row["highlights"]
    counts = Counter(len(re.split(r"(?<=[.!?])\s+", row["highlights"])) for row in rows["train"])
    assert counts[1] > 0.2 * len(rows["train"]) and counts[2] > 0.2 * len(rows["train"])


def test_entities_copied_verbatim(rows):
    for split_rows in rows.values():
        for row in split_rows:
            entities = row["entities"]
            assert len(entities) >= 3 and len(set(entities)) == len(entities), row["id"]
            for entity in entities:
                assert entity and entity in row["article"] and entity in row["highlights"], (
                    row["id"],
                    entity,
                )
            dates = [entity for entity in entities if DATE.search(entity)]
            assert len(dates) == 1, (row["id"], entities)  # the event date, as the article writes it


def test_pools_disjoint_and_large(pools):
    for name in ("first_names", "surnames", "org_words", "cities"):
        sets = {split: set(pools[split][name]) for split in pools}
        assert not sets["train"] & sets["test"] and not sets["train"] & sets["validation"], name
        assert not sets["validation"] & sets["test"], name
    every = {split: set().union(*map(set, pools[split].values())) for split in pools}
    assert not every["train"] & every["test"] and not every["train"] & every["validation"]
    test = pools["test"]
    assert len(test["surnames"]) >= 300 and len(test["first_names"]) >= 300
    assert len(test["cities"]) >= 100 and len(test["org_words"]) >= 100


def test_unseen_names_never_in_train(rows, pools):
    train = word_ngrams(row[field] for row in rows["train"] for field in ("article", "highlights"))
    for split in ("validation", "test"):
        for name, items in pools[split].items():
            leaked = [item for item in items if tuple(words(item)) in train]
            assert not leaked, (split, name, leaked[:10])


def test_rows_use_their_split_pools(rows, pools):
    """Sanity for the check above: test entities are built from test names, never from training names."""
    for split in ("validation", "test"):
        own = set(words(" ".join(item for items in pools[split].values() for item in items)))
        train_items = {item for items in pools["train"].values() for item in items}
        for row in rows[split]:
            names = [entity for entity in row["entities"] if not DATE.search(entity)]
            assert names and all(set(words(entity)) & own for entity in names), (row["id"], names)
            assert not {word for entity in names for word in words(entity)} & train_items, row["id"]


def test_distractor_names(rows, pools):
    """Articles name people or organisations that the highlight leaves out."""
    for split, split_rows in rows.items():
        names = (
            set(pools[split]["first_names"]) | set(pools[split]["surnames"]) | set(pools[split]["org_words"])
        )
        with_distractor = 0
        for row in split_rows:
            in_article = set(words(row["article"])) & names
            with_distractor += bool(in_article - set(words(row["highlights"])))
        assert with_distractor >= 0.9 * len(split_rows), split


def test_event_types_and_key_positions(rows):
    told = stories("train", SIZES["train_size"], seed=0)
    assert [story.article for story in told] == [row["article"] for row in rows["train"]]
    events = Counter(story.event for story in told)
    assert len(events) >= 8 and set(events) <= set(EVENTS)
    assert set(Counter(story.layout for story in told)) == set(LAYOUTS)
    for story in told:
        assert story.key_sentence in story.article and story.key_sentence in story.article.replace(
            "\n\n", " "
        )
        sentences = re.split(r"(?<=[.!?])\s+|\n\n", story.article)
        assert sentences[story.key_index] == story.key_sentence
    at_lead = sum(story.key_index == 0 for story in told) / len(told)
    assert 0.3 <= at_lead <= 0.75
    # independent of the builder's own record: the key date first appears early in some articles, late in others
    offsets = [
        len(row["article"][: row["article"].index(d)].split())
        for row in rows["train"]
        for d in row["entities"]
        if DATE.search(d)
    ]
    early = sum(offset <= 25 for offset in offsets) / len(offsets)
    assert 0.3 <= early <= 0.85
