"""Offline default: French, German and Spanish dates, numbers and short phrases, translated to English.

Three kinds of rows, each a (source, English) pair rendered by ``babel`` and ``num2words``:

- ``date``: a day d in 1900-01-01..2099-12-31 as ``babel.dates.format_date(d, F, L)`` for a source
  language L and a format F in ("full", "long", "medium"); target ``format_date(d, F, "en")``, e.g.
  "samedi 21 novembre 2026" -> "Saturday, November 21, 2026", "21.11.2026" -> "Nov 21, 2026".
  A medium date that reads exactly as the long one is not used (fr "4 mars 1999" is long; as medium
  its target would be "Mar 4, 1999"), so every source has one target.
- ``number``: an integer n in 0..999,999 as ``num2words(n, lang=L)`` (two num2words errors fixed, see
  ``cardinal``); target ``num2words(n, lang="en")`` (British style: "one hundred and one").
  The digit count is drawn uniformly from the classes with unused values, so short and long numbers
  both appear (a uniform n would be 90 % six-digit).
- ``phrase``: one date and one number in a sentence, five templates per language (``TEMPLATES``),
  with agreement handled per language: clock times (hours 1..12, "à une heure", "a la una",
  "um ein Uhr"), counts of visitors, euros paid and kilometres travelled (n >= 1, singular for 1,
  Spanish apocope "veintiún euros"; German counts ending in ...eins above 100 are not used).

Split rule: every date and every integer belongs to exactly one pool, "train" (90 %), "validation"
(5 %) or "test" (5 %), decided by a seeded 64-bit hash of the value (``assign_pools``), and a row
of split S uses only values of S's pool, so no test row shares a date or a number (clock hours
included) with any training row, in any language or format. A split whose pool holds no hour
1..12 gets no clock-time phrases. Within a split, date and number rows repeat a (value, language,
format) only when its pool is exhausted, and phrases are redrawn on a repeated pair.

Schema (WMT's on the hub plus three columns): ``translation`` {"mul": source, "en": target},
``src_lang`` ("fr" | "de" | "es"), ``kind`` ("date" | "number" | "phrase"), ``key`` (the
underlying values: "date:2026-11-21", "number:923471", "date:2026-11-21|number:3").
The same arguments always give the same rows (explicit numpy seeds, no hash() or set order).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping, Sequence

import numpy as np
from babel import Locale
from babel.dates import format_date
from datasets import Dataset, DatasetDict, Features, Value
from num2words import num2words

LANGUAGES = ("fr", "de", "es")
KINDS = ("date", "number", "phrase")
DEFAULT_KINDS: dict[str, float] = {"date": 0.45, "number": 0.4, "phrase": 0.15}
DATE_FORMATS = ("full", "long", "medium")
PHRASE_DATE_FORMATS = ("full", "long")  # medium ("21 nov 2026", "21.11.2026") reads badly in a sentence
FIRST_DAY = datetime.date(1900, 1, 1)
LAST_DAY = datetime.date(2099, 12, 31)
MAX_NUMBER = 999_999
HOURS = range(1, 13)
SPLITS = ("train", "validation", "test")
POOL_FRACTIONS = (0.9, 0.05, 0.05)  # share of all dates / numbers per split, in SPLITS order
FEATURES = Features(
    {
        "translation": {"mul": Value("string"), "en": Value("string")},
        "src_lang": Value("string"),
        "kind": Value("string"),
        "key": Value("string"),
    }
)
_LOCALES = {code: Locale.parse(code) for code in (*LANGUAGES, "en")}
_PHRASE_RETRIES = 10
_DATE_RETRIES = 100


def underlying_values(key: str) -> list[str]:
    """The values a row is built from: "date:2026-11-21|number:3" -> ["date:2026-11-21", "number:3"]."""
    return key.split("|")


# ---------------------------------------------------------------------------------------------
# Rendering


def render_date(day: datetime.date, fmt: str, lang: str) -> str:
    """``babel.dates.format_date(day, fmt, lang)`` with a cached Locale."""
    return format_date(day, format=fmt, locale=_LOCALES[lang])


def cardinal(n: int, lang: str) -> str:
    """``num2words(n, lang=lang)``, with two errors of num2words 0.5 corrected.

    German x01 thousands: "zweihunderteinstausend" -> "zweihunderteintausend". Spanish before "mil"
    takes the apocopated form: "veintiuno mil" -> "veintiún mil", "ciento uno mil" -> "ciento un mil".
    """
    words = num2words(n, lang=lang)
    if lang == "de":
        return words.replace("einstausend", "eintausend")
    if lang == "es":
        return re.sub(r"\b(veinti)?uno mil\b", lambda m: "veintiún mil" if m.group(1) else "un mil", words)
    return words


def _hour(h: int, lang: str) -> str:
    """The clock time h (1..12) after the preposition: "une heure", "las tres", "ein" (Uhr), "one"."""
    if lang == "fr":
        return "une heure" if h == 1 else f"{cardinal(h, 'fr')} heures"
    if lang == "es":
        return "la una" if h == 1 else f"las {cardinal(h, 'es')}"
    if lang == "de":
        return "ein" if h == 1 else cardinal(h, "de")
    return cardinal(h, lang)


def _count(n: int, lang: str, singular: str, plural: str, *, de_one: str = "ein") -> str:
    """n >= 1 before a masculine noun: "vingt et un euros", "veintiún euros", "einen Euro", "one euro"."""
    if n == 1:
        word = {"fr": "un", "es": "un", "de": de_one, "en": "one"}[lang]
        return f"{word} {singular}"
    words = cardinal(n, lang)
    if lang == "es":  # apocope before a masculine noun: veintiuno -> veintiún, treinta y uno -> treinta y un
        words = re.sub(r"\b(veinti)?uno$", lambda m: "veintiún" if m.group(1) else "un", words)
    return f"{words} {plural}"


_DATE_ARTICLE = {"fr": "le", "de": "am", "es": "el", "en": "on"}
_NOUNS = {  # (singular, plural) per count template
    "visitors": {
        "fr": ("visiteur", "visiteurs"),
        "de": ("Besucher", "Besucher"),
        "es": ("visitante", "visitantes"),
        "en": ("visitor", "visitors"),
    },
    "paid": {
        "fr": ("euro", "euros"),
        "de": ("Euro", "Euro"),
        "es": ("euro", "euros"),
        "en": ("euro", "euros"),
    },
    "travelled": {
        "fr": ("kilomètre", "kilomètres"),
        "de": ("Kilometer", "Kilometer"),
        "es": ("kilómetro", "kilómetros"),
        "en": ("kilometre", "kilometres"),
    },
}
_SENTENCES = {  # template -> lang -> format string over {date} (with its article) and {num}
    "clock": {
        "fr": "{date} à {num}",
        "de": "{date} um {num} Uhr",
        "es": "{date} a {num}",
        "en": "{date} at {num} o'clock",
    },
    "meeting": {
        "fr": "la réunion a lieu {date} à {num}",
        "de": "die Sitzung ist {date} um {num} Uhr",
        "es": "la reunión es {date} a {num}",
        "en": "the meeting is {date} at {num} o'clock",
    },
    "visitors": {"fr": "{num} {date}", "de": "{num} {date}", "es": "{num} {date}", "en": "{num} {date}"},
    "paid": {
        "fr": "{date}, nous avons payé {num}",
        "de": "{date} haben wir {num} bezahlt",
        "es": "{date}, pagamos {num}",
        "en": "{date}, we paid {num}",
    },
    "travelled": {
        "fr": "nous avons parcouru {num} {date}",
        "de": "wir sind {date} {num} gefahren",
        "es": "recorrimos {num} {date}",
        "en": "we travelled {num} {date}",
    },
}
CLOCK_TEMPLATES = ("clock", "meeting")  # the number is an hour 1..12
COUNT_TEMPLATES = ("visitors", "paid", "travelled")  # the number is a count >= 1
TEMPLATES = CLOCK_TEMPLATES + COUNT_TEMPLATES


def render_phrase(template: str, lang: str, day: datetime.date, n: int, fmt: str) -> tuple[str, str]:
    """(source, English) of `template` with `day` in date format `fmt` (full / long) and the number n.

    >>> render_phrase("clock", "fr", datetime.date(2026, 11, 21), 3, "full")
    ('le samedi 21 novembre 2026 à trois heures', "on Saturday, November 21, 2026 at three o'clock")
    """
    if template in CLOCK_TEMPLATES and not 1 <= n <= 12:
        raise ValueError(f"clock template '{template}' needs an hour 1..12, got {n}")
    if template in COUNT_TEMPLATES and (n < 1 or (lang == "de" and not german_count_ok(n))):
        raise ValueError(
            f"count template '{template}' needs n >= 1 (in German not ...eins above 100), got {n}"
        )
    if template not in _SENTENCES:
        raise ValueError(f"unknown template '{template}'; expected one of {TEMPLATES}")
    out = []
    for language in (lang, "en"):
        date_text = f"{_DATE_ARTICLE[language]} {render_date(day, fmt, language)}"
        if template in CLOCK_TEMPLATES:
            num_text = _hour(n, language)
        else:
            singular, plural = _NOUNS[template][language]
            num_text = _count(
                n, language, singular, plural, de_one="ein" if template == "visitors" else "einen"
            )
        out.append(_SENTENCES[template][language].format(date=date_text, num=num_text))
    return out[0], out[1]


def german_count_ok(n: int) -> bool:
    """German counts ending in ...eins above 100 ("hunderteins Euro" / "hundertein Euro") are avoided."""
    return n == 1 or n % 100 != 1


# ---------------------------------------------------------------------------------------------
# Pools


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def assign_pools(kind: str, values: np.ndarray, seed: int) -> np.ndarray:
    """Split index (0 train, 1 validation, 2 test) of each integer value of `kind` ("date": ordinal day).

    A seeded 64-bit hash mapped to [0, 1) and cut at POOL_FRACTIONS: fixed per (kind, value, seed).
    """
    salt = {"date": 1, "number": 2}[kind]
    base = _splitmix64(np.array([(seed % 2**62) * 4 + salt], dtype=np.uint64))
    hashed = _splitmix64(np.asarray(values, dtype=np.uint64) ^ base)
    unit = (hashed >> np.uint64(11)).astype(np.float64) / 2.0**53
    return np.searchsorted(np.cumsum(POOL_FRACTIONS)[:-1], unit, side="right")


class _Stream:
    """Values of `pool` in a fresh random order per pass (without replacement until exhausted)."""

    def __init__(self, pool: np.ndarray, rng: np.random.Generator) -> None:
        self.pool, self.rng, self.order, self.pos = pool, rng, None, 0

    def remaining(self) -> int:
        return len(self.pool) if self.order is None else len(self.order) - self.pos

    def next(self) -> int:
        if self.order is None or self.pos == len(self.order):
            self.order, self.pos = self.rng.permutation(self.pool), 0
        self.pos += 1
        return int(self.order[self.pos - 1])


class _ClassSampler:
    """Per language: a class (date format / digit count) drawn uniformly among those with unused values.

    When every class of a language is exhausted, all restart (duplicates only beyond the pool size).
    """

    def __init__(self, pools: Sequence[np.ndarray], n_languages: int, rng: np.random.Generator) -> None:
        self.classes = [c for c, pool in enumerate(pools) if len(pool)]
        if not self.classes:
            raise ValueError("empty pool")
        self.streams = [{c: _Stream(pools[c], rng) for c in self.classes} for _ in range(n_languages)]

    def draw(self, language: int, u: float) -> tuple[int, int]:
        streams = self.streams[language]
        open_classes = [c for c in self.classes if streams[c].remaining() > 0]
        if not open_classes:
            for stream in streams.values():
                stream.order = None
            open_classes = self.classes
        c = open_classes[int(u * len(open_classes))]
        return c, streams[c].next()


def _by_digits(numbers: np.ndarray) -> list[np.ndarray]:
    """Sorted `numbers` cut into 1-digit, 2-digit, ..., 6-digit classes."""
    edges = np.searchsorted(numbers, [0, 10, 100, 1_000, 10_000, 100_000, 1_000_000])
    return [numbers[edges[i] : edges[i + 1]] for i in range(6)]


# ---------------------------------------------------------------------------------------------
# Builder


def _build_split(
    index: int,
    size: int,
    *,
    seed: int,
    languages: Sequence[str],
    kinds: Sequence[str],
    weights: np.ndarray,
    days: np.ndarray,
    numbers: np.ndarray,
) -> Dataset:
    """`size` rows from the split's pools of ordinal `days` and `numbers` (both sorted)."""
    rng = np.random.default_rng([seed % 2**64, index])
    kind_of = rng.choice(len(kinds), size=size, p=weights)
    lang_of = rng.integers(len(languages), size=size)
    u_class, u_date_format, u_hour = rng.random(size), rng.random(size), rng.random(size)
    dates = _ClassSampler([days] * len(DATE_FORMATS), len(languages), rng)
    plain_numbers = _ClassSampler(_by_digits(numbers), len(languages), rng)
    phrase_days = _Stream(days, rng)
    counts = numbers[numbers >= 1]
    german_counts = counts[(counts == 1) | (counts % 100 != 1)]  # german_count_ok, vectorised
    count_streams = {  # per German-or-not: one stream per non-empty digit class
        german: [_Stream(pool, rng) for pool in _by_digits(german_counts if german else counts) if len(pool)]
        for german in (False, True)
    }
    hours = numbers[(numbers >= 1) & (numbers <= 12)]
    templates = TEMPLATES if len(hours) else COUNT_TEMPLATES
    english: dict[tuple[str, int], str] = {}  # cache of English renderings per (format / "n", value)
    columns: dict[str, list] = {"translation": [], "src_lang": [], "kind": [], "key": []}
    seen_phrases: set[tuple[str, str]] = set()
    for row in range(size):
        kind, lang = kinds[kind_of[row]], languages[lang_of[row]]
        if kind == "date":
            for _ in range(_DATE_RETRIES):  # skip a medium date that reads as the long one (fr "4 mars 1999")
                fmt_index, ordinal = dates.draw(int(lang_of[row]), float(u_class[row]))
                fmt, day = DATE_FORMATS[fmt_index], datetime.date.fromordinal(ordinal)
                source = render_date(day, fmt, lang)
                if fmt != "medium" or source != render_date(day, "long", lang):
                    break
            else:
                fmt, source = "long", render_date(day, "long", lang)
            if (fmt, ordinal) not in english:
                english[fmt, ordinal] = render_date(day, fmt, "en")
            target = english[fmt, ordinal]
            key = f"date:{day.isoformat()}"
        elif kind == "number":
            _, n = plain_numbers.draw(int(lang_of[row]), float(u_class[row]))
            source = cardinal(n, lang)
            if ("n", n) not in english:
                english["n", n] = cardinal(n, "en")
            target = english["n", n]
            key = f"number:{n}"
        else:
            template = templates[int(u_class[row] * len(templates))]
            fmt = PHRASE_DATE_FORMATS[int(u_date_format[row] * len(PHRASE_DATE_FORMATS))]
            if template in CLOCK_TEMPLATES:
                n = int(hours[int(u_hour[row] * len(hours))])
            else:
                classes = count_streams[lang == "de"]
                n = classes[int(u_hour[row] * len(classes))].next()
            for _ in range(_PHRASE_RETRIES):  # a repeated pair takes another date
                day = datetime.date.fromordinal(phrase_days.next())
                source, target = render_phrase(template, lang, day, n, fmt)
                if (source, target) not in seen_phrases:
                    break
            seen_phrases.add((source, target))
            key = f"date:{day.isoformat()}|number:{n}"
        columns["translation"].append({"mul": source, "en": target})
        columns["src_lang"].append(lang)
        columns["kind"].append(kind)
        columns["key"].append(key)
    return Dataset.from_dict(columns, features=FEATURES)


def build_mul_en(
    *,
    train_size: int = 200_000,
    validation_size: int = 1_000,
    test_size: int = 3_000,
    seed: int = 0,
    languages: Sequence[str] = LANGUAGES,
    kinds: Mapping[str, float] | None = None,
) -> DatasetDict:
    """Splits "train", "validation", "test" of fr/de/es -> en rows, values split by pool (module docstring).

    `kinds`: weight per kind (normalised; default DEFAULT_KINDS); languages are drawn uniformly from
    `languages`, date formats uniformly. Schema: FEATURES.
    """
    weights_by_kind = dict(DEFAULT_KINDS if kinds is None else kinds)
    unknown = sorted(set(weights_by_kind) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown kinds {unknown}; expected some of {KINDS}")
    used = [k for k in KINDS if weights_by_kind.get(k, 0) > 0]
    if not used or any(weights_by_kind[k] < 0 for k in weights_by_kind):
        raise ValueError(f"kinds needs non-negative weights with a positive sum, got {weights_by_kind}")
    weights = np.array([weights_by_kind[k] for k in used], dtype=np.float64)
    languages = tuple(languages)
    if not languages or len(set(languages)) != len(languages) or not set(languages) <= set(LANGUAGES):
        raise ValueError(f"languages must be distinct, some of {LANGUAGES}, got {languages}")
    sizes = (train_size, validation_size, test_size)
    if any(s < 0 for s in sizes):
        raise ValueError(f"split sizes must be >= 0, got {sizes}")

    all_days = np.arange(FIRST_DAY.toordinal(), LAST_DAY.toordinal() + 1, dtype=np.int64)
    all_numbers = np.arange(MAX_NUMBER + 1, dtype=np.int64)
    day_pool, number_pool = assign_pools("date", all_days, seed), assign_pools("number", all_numbers, seed)
    return DatasetDict(
        {
            name: _build_split(
                index,
                size,
                seed=seed,
                languages=languages,
                kinds=used,
                weights=weights / weights.sum(),
                days=all_days[day_pool == index],
                numbers=all_numbers[number_pool == index],
            )
            for index, (name, size) in enumerate(zip(SPLITS, sizes, strict=True))
        }
    )
