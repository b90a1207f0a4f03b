"""The cluttered-digits segmentation builder: schema, masks re-derived from the images, small objects, pools.

The masks are checked against the pixels, not against the builder's code: without clutter and noise
the annotation must be exactly a threshold of the image (digit >= 0.5, ignore in [0.15, 0.5),
background < 0.15); with them, digit pixels must still be bright, a check shown to fail when the mask
is shifted by 2 px. Heights are checked against the extent of unrotated single-digit masks.
"""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Features, Image, Sequence, Value
from sklearn.datasets import load_digits
from tasks.segmentation import builder
from tasks.segmentation.builder import (
    CLASS_NAMES,
    FEATURES,
    IGNORE_INDEX,
    SMALL_HEIGHT,
    build_cluttered_digits,
    glyph_pools,
)

SIZES = {"train": 40, "validation": 10, "test": 10}
BRIGHT = 80  # uint8: digit pixels are >= 128 before noise of std 0.06 * 255 = 15


@pytest.fixture(scope="module")
def dataset():
    return build_cluttered_digits(train_size=40, validation_size=10, test_size=10, seed=0)


@pytest.fixture(scope="module")
def rows(dataset):
    return [row for split in dataset for row in dataset[split]]


@pytest.fixture(scope="module")
def clean_rows():
    """No clutter, no noise, no rotation, a 48 px canvas."""
    ds = build_cluttered_digits(
        train_size=60, validation_size=1, test_size=1, canvas_size=48, max_height=20,
        max_rotation=0.0, clutter=0, noise_std=0.0, seed=5,
    )  # fmt: skip
    return list(ds["train"])


@pytest.fixture(scope="module")
def sample_rows():
    """200 default images for distribution checks."""
    return list(build_cluttered_digits(train_size=200, validation_size=1, test_size=1, seed=1)["train"])


def arrays(row) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.asarray(row["image"]), np.asarray(row["annotation"]), np.asarray(row["small_objects"])


def is_digit(mask: np.ndarray) -> np.ndarray:
    return (mask >= 1) & (mask <= 10)


def near(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within `radius` (Chebyshev) of a True pixel of `mask`."""
    padded = np.pad(mask, radius)
    out = np.zeros_like(mask)
    height, width = mask.shape
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out |= padded[dy : dy + height, dx : dx + width]
    return out


def digits_bright(image: np.ndarray, mask: np.ndarray) -> bool:
    """At least 95 % of the mask's digit pixels are bright, and they are far brighter than background."""
    digit = is_digit(mask)
    if not digit.any():
        return True
    return (image[digit] >= BRIGHT).mean() >= 0.95 and image[digit].mean() > image[mask == 0].mean() + 80


def test_schema_and_constants(dataset):
    assert FEATURES == Features(
        {
            "image": Image(),
            "annotation": Image(),
            "small_objects": Image(),
            "digits": Sequence(Value("int64")),
            "heights": Sequence(Value("int64")),
        }
    )
    assert CLASS_NAMES == ["background", *"0123456789"]
    assert (IGNORE_INDEX, SMALL_HEIGHT) == (255, 12)
    assert {split: len(dataset[split]) for split in dataset} == SIZES
    for split in dataset:
        assert dataset[split].features == FEATURES


def test_modes_and_sizes(rows, clean_rows):
    for row in rows:
        for column in ("image", "annotation", "small_objects"):
            assert (row[column].mode, row[column].size) == ("L", (64, 64))
    assert {row["image"].size for row in clean_rows} == {(48, 48)}


def test_mask_classes_match_digits(rows):
    for row in rows:
        _, mask, _ = arrays(row)
        digits = row["digits"]
        assert 1 <= len(digits) <= 4 and len(row["heights"]) == len(digits)
        labels, counts = np.unique(mask, return_counts=True)
        present = {int(label) for label in labels} - {0, IGNORE_INDEX}
        assert present == {d + 1 for d in digits}, (present, digits)  # every listed digit stays visible
        assert set(labels.tolist()) <= {0, IGNORE_INDEX, *range(1, 11)}
        assert counts[labels == 0].sum() > mask.size // 3


def test_mask_is_a_threshold_of_the_clean_image(clean_rows):
    """Without clutter and noise: digit <=> >= 0.5, ignore <=> [0.15, 0.5), background <=> < 0.15."""
    for row in clean_rows:
        image, mask, _ = arrays(row)
        assert image[is_digit(mask)].min() >= 128
        assert image[mask == 0].max(initial=0) <= 38
        rim = image[mask == IGNORE_INDEX]
        assert rim.size == 0 or (rim.min() >= 38 and rim.max() <= 127)
        shifted = np.roll(mask, 2, axis=1)
        if is_digit(mask).any():
            assert image[is_digit(shifted)].min() < 128  # the check has power


def test_heights_match_unrotated_masks(clean_rows):
    """A lone unrotated digit's pixels span its height (thresholding may shave one row)."""
    singles = [row for row in clean_rows if len(row["digits"]) == 1]
    assert len(singles) >= 5
    for row in singles:
        (height,) = row["heights"]
        rows_with_digit = np.flatnonzero(is_digit(arrays(row)[1]).any(axis=1))
        extent = rows_with_digit[-1] - rows_with_digit[0] + 1
        assert height - 1 <= extent <= height, (height, extent)
        assert 0.1 * height**2 <= is_digit(arrays(row)[1]).sum() <= 0.6 * height**2


def test_digit_pixels_are_bright_and_shifted_masks_are_not(rows):
    for row in rows:
        image, mask, _ = arrays(row)
        assert digits_bright(image, mask)
    for shift in [(0, 2), (2, 0), (-2, 0), (0, -3), (2, 2)]:
        failures = sum(
            not digits_bright(arrays(r)[0], np.roll(arrays(r)[1], shift, axis=(0, 1))) for r in rows
        )
        assert failures >= 0.9 * len(rows), shift


def test_ignore_pixels_hug_digit_pixels(rows, clean_rows):
    total = 0
    for row in rows + clean_rows:
        _, mask, _ = arrays(row)
        ignore = mask == IGNORE_INDEX
        assert not (ignore & ~near(is_digit(mask), 2)).any()
        moved = np.roll(ignore, 5, axis=1)  # the check has power: a displaced rim fails it
        assert not moved.any() or (moved & ~near(is_digit(mask), 2)).any()
        total += ignore.sum()
    assert total > 0


def test_clutter_is_drawn_but_not_labelled(rows):
    bright_background = [(arrays(r)[0][arrays(r)[1] == 0] >= 110).sum() for r in rows]
    assert np.mean([count > 0 for count in bright_background]) > 0.5


def check_small_objects(row) -> str:
    """Asserts the small-objects layer of one image; returns its kind: all small, all large or mixed."""
    _, mask, small = arrays(row)
    assert set(np.unique(small).tolist()) <= {0, 1}
    digit = is_digit(mask)
    assert not (small.astype(bool) & ~digit).any()
    flags = [h < SMALL_HEIGHT for h in row["heights"]]
    if all(flags):
        assert np.array_equal(small.astype(bool), digit)
        return "small"
    if not any(flags):
        assert not small.any()
        return "large"
    for digit_value in set(row["digits"]):
        kinds = {f for d, f in zip(row["digits"], flags, strict=True) if d == digit_value}
        pixels = small[mask == digit_value + 1]
        if kinds == {True}:
            assert pixels.all()
        elif kinds == {False}:
            assert not pixels.any()
    return "mixed"


def test_small_objects(sample_rows):
    kinds = [check_small_objects(row) for row in sample_rows]
    assert {kind: kinds.count(kind) > 5 for kind in ("small", "large", "mixed")} == dict.fromkeys(
        ("small", "large", "mixed"), True
    )


def test_heights_counts_and_small_fraction(sample_rows):
    heights = np.concatenate([row["heights"] for row in sample_rows])
    counts = [len(row["digits"]) for row in sample_rows]
    assert heights.min() >= 6 and heights.max() <= 28
    assert 0.15 < (heights < SMALL_HEIGHT).mean() < 0.6
    assert set(counts) == {1, 2, 3, 4}
    digits = np.concatenate([row["digits"] for row in sample_rows])
    assert set(digits.tolist()) == set(range(10))


def test_determinism(dataset):
    def raw(ds):
        return [
            (r["image"].tobytes(), r["annotation"].tobytes(), r["small_objects"].tobytes(), r["digits"])
            for split in ds
            for r in ds[split]
        ]

    again = build_cluttered_digits(train_size=40, validation_size=10, test_size=10, seed=0)
    other = build_cluttered_digits(train_size=40, validation_size=10, test_size=10, seed=1)
    assert raw(again) == raw(dataset)
    assert all(a != b for a, b in zip(raw(other), raw(dataset), strict=True))
    splits = {split: [r["image"].tobytes() for r in dataset[split]] for split in dataset}
    assert splits["validation"] != splits["test"][: len(splits["validation"])]


def test_glyph_pools_are_disjoint_and_stratified():
    pools = glyph_pools(0)
    assert list(pools) == ["train", "validation", "test"]
    together = np.concatenate(list(pools.values()))
    assert len(together) == len(set(together.tolist())) == 1797
    assert [round(len(p) / 1797, 2) for p in pools.values()] == [0.7, 0.1, 0.2]
    targets = load_digits().target
    assert all(set(targets[p].tolist()) == set(range(10)) for p in pools.values())
    assert all(np.array_equal(pools[s], glyph_pools(0)[s]) for s in pools)
    assert not np.array_equal(pools["test"], glyph_pools(1)["test"])


def test_each_split_draws_from_its_own_pool(monkeypatch):
    targets = load_digits().target
    by_digit = {
        split: np.flatnonzero(targets == d) for split, d in (("train", 1), ("validation", 4), ("test", 7))
    }
    monkeypatch.setattr(builder, "glyph_pools", lambda seed: by_digit)
    ds = build_cluttered_digits(train_size=5, validation_size=5, test_size=5, clutter=0)
    assert {split: {d for digits in ds[split]["digits"] for d in digits} for split in ds} == {
        "train": {1},
        "validation": {4},
        "test": {7},
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train_size": 0}, "train_size=0"),
        ({"validation_size": 0}, "validation_size=0"),
        ({"test_size": -1}, "test_size=-1"),
        ({"min_height": 30, "max_height": 28}, "min_height=30 > max_height=28"),
        ({"min_height": 0}, "min_height=0"),
        ({"max_height": 65}, "max_height=65 > canvas_size=64"),
        ({"min_digits": 3, "max_digits": 2}, "min_digits=3 > max_digits=2"),
        ({"min_digits": -1}, "min_digits=-1"),
        ({"max_rotation": 200.0}, "max_rotation=200.0"),
        ({"clutter": -1}, "clutter=-1"),
        ({"noise_std": -0.1}, "noise_std=-0.1"),
        ({"canvas_size": 0, "max_height": 0, "min_height": 0}, "canvas_size=0"),
    ],
)
def test_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_cluttered_digits(**kwargs)


def test_crowded_canvas_is_an_error():
    with pytest.raises(RuntimeError, match="could not place 20 digits"):
        build_cluttered_digits(
            train_size=1, validation_size=1, test_size=1, canvas_size=8, min_height=8, max_height=8,
            min_digits=20, max_digits=20, clutter=0,
        )  # fmt: skip
