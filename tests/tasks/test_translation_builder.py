"""The fr/de/es -> en builder: schema, determinism, value-disjoint splits, and every row re-rendered.

Dates and numbers are checked against babel and num2words called here directly; phrases against
hand-written sentences and against the renderings of the values in their key.
"""

from __future__ import annotations

import datetime
import re

import numpy as np
import pytest
from babel.dates import format_date
from datasets import Features, Value
from num2words import num2words
from tasks.translation.builder import assign_pools, build_mul_en, cardinal, render_phrase, underlying_values

from attnlab.data import dataset_fingerprint

SIZES = {"train_size": 3000, "validation_size": 200, "test_size": 400}
LANGS = ("fr", "de", "es")
KINDS = ("date", "number", "phrase")
FORMATS = ("full", "long", "medium")


@pytest.fixture(scope="module")
def dataset():
    return build_mul_en(**SIZES, seed=0)


@pytest.fixture(scope="module")
def rows(dataset):
    return {split: dataset[split].to_list() for split in dataset}


def values_of(split_rows) -> set[str]:
    return {value for row in split_rows for value in underlying_values(row["key"])}


def parse(key: str) -> tuple[datetime.date | None, int | None]:
    day = number = None
    for value in underlying_values(key):
        kind, _, text = value.partition(":")
        if kind == "date":
            day = datetime.date.fromisoformat(text)
        elif kind == "number":
            number = int(text)
        else:
            raise AssertionError(f"unknown value {value!r}")
    return day, number


def words(n: int, lang: str) -> str:
    """num2words with the builder's two documented corrections (German x01 thousands, Spanish "un mil")."""
    text = num2words(n, lang=lang)
    if lang == "de":
        text = text.replace("einstausend", "eintausend")
    if lang == "es":
        text = re.sub(r"\bveintiuno mil", "veintiún mil", text)
        text = re.sub(r"\buno mil", "un mil", text)
    return text


def has_word(text: str, phrase: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text) is not None


def test_schema_sizes_and_coverage(dataset, rows):
    assert list(dataset) == ["train", "validation", "test"]
    assert dataset["train"].features == Features(
        {
            "translation": {"mul": Value("string"), "en": Value("string")},
            "src_lang": Value("string"),
            "kind": Value("string"),
            "key": Value("string"),
        }
    )
    assert [len(dataset[s]) for s in dataset] == [3000, 200, 400]
    for split in ("train", "test"):
        assert {r["kind"] for r in rows[split]} == set(KINDS)
        assert {r["src_lang"] for r in rows[split]} == set(LANGS)
        assert {(r["kind"], r["src_lang"]) for r in rows[split]} == {
            (k, lang) for k in KINDS for lang in LANGS
        }
    kinds = [r["kind"] for r in rows["train"]]
    assert 0.40 < kinds.count("date") / 3000 < 0.50 and 0.35 < kinds.count("number") / 3000 < 0.45
    for split_rows in rows.values():
        assert all(r["translation"]["mul"] and r["translation"]["en"] for r in split_rows)


def test_deterministic_and_seeded(dataset):
    again = build_mul_en(**SIZES, seed=0)
    assert dataset_fingerprint(again) == dataset_fingerprint(dataset)
    assert again["test"].to_list() == dataset["test"].to_list()
    other = build_mul_en(**SIZES, seed=1)
    assert dataset_fingerprint(other) != dataset_fingerprint(dataset)
    assert values_of(other["test"].to_list()) != values_of(dataset["test"].to_list())


def test_splits_share_no_date_or_number(rows):
    train, validation, test = (values_of(rows[s]) for s in ("train", "validation", "test"))
    assert not test & train
    assert not test & validation
    assert not validation & train


def test_pools_do_not_depend_on_sizes(rows):
    """The pool of a value is fixed by value and seed: a bigger test split still avoids this train."""
    bigger = build_mul_en(train_size=10, validation_size=10, test_size=1500, seed=0)
    assert not values_of(bigger["test"].to_list()) & values_of(rows["train"])


def date_format(row) -> str | None:
    """The format F with source == format_date(day, F, src_lang) and target == format_date(day, F, "en")."""
    day, _ = parse(row["key"])
    src, tgt = row["translation"]["mul"], row["translation"]["en"]
    for fmt in FORMATS:
        if src == format_date(day, format=fmt, locale=row["src_lang"]) and tgt == format_date(
            day, format=fmt, locale="en"
        ):
            return fmt
    return None


def test_date_rows_are_babel_renderings(rows):
    for split_rows in rows.values():
        for row in (r for r in split_rows if r["kind"] == "date"):
            day, number = parse(row["key"])
            assert day is not None and number is None
            assert datetime.date(1900, 1, 1) <= day <= datetime.date(2099, 12, 31)
            assert date_format(row) is not None, row
    date_rows = [r for r in rows["train"] if r["kind"] == "date"]
    assert {(r["src_lang"], date_format(r)) for r in date_rows} == {
        (lang, f) for lang in LANGS for f in FORMATS
    }
    assert len({(r["src_lang"], r["translation"]["mul"]) for r in date_rows}) == len(date_rows)  # no repeats


def test_number_rows_are_num2words(rows):
    for split_rows in rows.values():
        for row in (r for r in split_rows if r["kind"] == "number"):
            day, n = parse(row["key"])
            assert day is None and 0 <= n <= 999_999
            assert row["translation"]["mul"] == words(n, row["src_lang"]), row
            assert row["translation"]["en"] == num2words(n, lang="en"), row
    train = [parse(r["key"])[1] for r in rows["train"] if r["kind"] == "number"]
    assert any(n < 100 for n in train) and any(n >= 100_000 for n in train)
    assert sum(n < 10_000 for n in train) > 0.2 * len(train)  # not the 99 % of five/six digits of a uniform n
    number_rows = [r for r in rows["train"] if r["kind"] == "number"]
    assert len({(r["src_lang"], r["key"]) for r in number_rows}) == len(number_rows)  # no repeats


def test_num2words_corrections():
    """Two num2words errors are fixed: German "...einstausend", Spanish "veintiuno mil" / "uno mil"."""
    assert cardinal(201_005, "de") == "zweihunderteintausendfünf"
    assert cardinal(21_000, "es") == "veintiún mil"
    assert cardinal(131_001, "es") == "ciento treinta y un mil uno"
    assert cardinal(101_000, "es") == "ciento un mil"
    assert cardinal(21_000, "fr") == "vingt et un mille"
    assert cardinal(923_471, "en") == num2words(923_471, lang="en")


def template_of(english: str) -> str:
    if "o'clock" in english:
        return "meeting" if english.startswith("the meeting") else "clock"
    for template, marker in (("paid", "we paid"), ("travelled", "we travelled"), ("visitors", "visitor")):
        if marker in english:
            return template
    raise AssertionError(f"no template reads {english!r}")


def test_phrase_rows_render_their_values(rows):
    for split_rows in rows.values():
        for row in (r for r in split_rows if r["kind"] == "phrase"):
            day, n = parse(row["key"])
            assert day is not None and n is not None, row
            lang, src, tgt = row["src_lang"], row["translation"]["mul"], row["translation"]["en"]
            assert any(
                format_date(day, format=f, locale="en") in tgt
                and format_date(day, format=f, locale=lang) in src
                for f in ("full", "long")
            ), row
            assert has_word(tgt, num2words(n, lang="en")), row
            forms = {words(n, lang)}  # agreement variants: "une heure", "ein Uhr", "la una", "veintiún euros"
            if lang == "es":
                forms.add(
                    re.sub(r"\b(veinti)?uno$", lambda m: "veintiún" if m.group(1) else "un", words(n, lang))
                )
            if n == 1:
                forms |= {"fr": {"une"}, "de": {"ein", "einen"}, "es": {"un", "la una"}}[lang]
            assert any(has_word(src, form) for form in forms), row
            assert (1 <= n <= 12) if template_of(tgt) in ("clock", "meeting") else n >= 1
    train = [r for r in rows["train"] if r["kind"] == "phrase"]
    assert {template_of(r["translation"]["en"]) for r in train} == {
        "clock",
        "meeting",
        "visitors",
        "paid",
        "travelled",
    }
    assert len({(r["translation"]["mul"], r["translation"]["en"]) for r in train}) == len(train)


@pytest.mark.parametrize(
    ("template", "lang", "day", "n", "fmt", "expected"),
    [
        (
            "clock",
            "fr",
            (2026, 11, 21),
            3,
            "full",
            ("le samedi 21 novembre 2026 à trois heures", "on Saturday, November 21, 2026 at three o'clock"),
        ),
        (
            "clock",
            "fr",
            (2026, 11, 21),
            1,
            "long",
            ("le 21 novembre 2026 à une heure", "on November 21, 2026 at one o'clock"),
        ),
        (
            "clock",
            "de",
            (2026, 11, 21),
            3,
            "full",
            ("am Samstag, 21. November 2026 um drei Uhr", "on Saturday, November 21, 2026 at three o'clock"),
        ),
        (
            "clock",
            "de",
            (2026, 11, 21),
            1,
            "long",
            ("am 21. November 2026 um ein Uhr", "on November 21, 2026 at one o'clock"),
        ),
        (
            "clock",
            "es",
            (2026, 11, 21),
            3,
            "full",
            (
                "el sábado, 21 de noviembre de 2026 a las tres",
                "on Saturday, November 21, 2026 at three o'clock",
            ),
        ),
        (
            "clock",
            "es",
            (2026, 11, 21),
            1,
            "long",
            ("el 21 de noviembre de 2026 a la una", "on November 21, 2026 at one o'clock"),
        ),
        (
            "visitors",
            "fr",
            (1999, 3, 4),
            21,
            "long",
            ("vingt et un visiteurs le 4 mars 1999", "twenty-one visitors on March 4, 1999"),
        ),
        (
            "visitors",
            "es",
            (1999, 3, 4),
            21,
            "long",
            ("veintiún visitantes el 4 de marzo de 1999", "twenty-one visitors on March 4, 1999"),
        ),
        (
            "visitors",
            "de",
            (1999, 3, 4),
            1,
            "long",
            ("ein Besucher am 4. März 1999", "one visitor on March 4, 1999"),
        ),
        (
            "paid",
            "de",
            (1999, 3, 4),
            1,
            "long",
            ("am 4. März 1999 haben wir einen Euro bezahlt", "on March 4, 1999, we paid one euro"),
        ),
        (
            "paid",
            "es",
            (1999, 3, 4),
            31_000,
            "long",
            (
                "el 4 de marzo de 1999, pagamos treinta y un mil euros",
                "on March 4, 1999, we paid thirty-one thousand euros",
            ),
        ),
        (
            "travelled",
            "fr",
            (1999, 3, 4),
            80,
            "long",
            (
                "nous avons parcouru quatre-vingts kilomètres le 4 mars 1999",
                "we travelled eighty kilometres on March 4, 1999",
            ),
        ),
    ],
)
def test_phrase_grammar(template, lang, day, n, fmt, expected):
    assert render_phrase(template, lang, datetime.date(*day), n, fmt) == expected


def test_phrase_refuses_ungrammatical_values():
    with pytest.raises(ValueError):
        render_phrase("clock", "fr", datetime.date(2000, 1, 1), 13, "full")
    with pytest.raises(ValueError):
        render_phrase("paid", "de", datetime.date(2000, 1, 1), 101, "full")


@pytest.mark.parametrize("seed", [0, 3])  # seed 0: no hour 1..12 in the test pool; seed 3: hours 6 and 8
def test_clock_hours_stay_in_their_split(seed):
    """Clock phrases use only their split's hours; a split without any still gets (count) phrases."""
    pool = assign_pools("number", np.arange(1, 13), seed)
    dataset = build_mul_en(
        train_size=100, validation_size=150, test_size=150, seed=seed, kinds={"phrase": 1.0}
    )
    for index, split in enumerate(("train", "validation", "test")):
        split_rows = dataset[split].to_list()
        assert split_rows and all(r["kind"] == "phrase" for r in split_rows)
        hours = {parse(r["key"])[1] for r in split_rows if "o'clock" in r["translation"]["en"]}
        allowed = {h for h, p in zip(range(1, 13), pool, strict=True) if p == index}
        assert hours <= allowed
        assert bool(hours) == bool(allowed)  # clock templates are used whenever the pool has an hour


def test_kinds_and_languages_arguments():
    dataset = build_mul_en(
        train_size=60, validation_size=10, test_size=10, languages=("de",), kinds={"number": 1}
    )
    assert {(r["kind"], r["src_lang"]) for r in dataset["train"].to_list()} == {("number", "de")}
    with pytest.raises(ValueError):
        build_mul_en(train_size=10, validation_size=1, test_size=1, kinds={"time": 1.0})
    with pytest.raises(ValueError):
        build_mul_en(train_size=10, validation_size=1, test_size=1, languages=("it",))
