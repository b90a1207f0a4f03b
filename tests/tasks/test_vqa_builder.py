"""The Sort-of-CLEVR builder follows the paper's specification.

Answers are checked against a second, independent reading of each scene: the objects are found in
the rendered pixels (colour segmentation), and every template is answered again from their centroids.
"""

from __future__ import annotations

import inspect
import math
import re

import numpy as np
import pytest
from scipy import ndimage
from tasks.vqa.builder import (
    COLOR_RANGES,
    COLORS,
    FAMILIES,
    IMAGE_SIZE,
    TEMPLATES,
    build_sort_of_clevr,
    build_split,
    sample_scene,
)

from attnlab.data import dataset_fingerprint

RANGES = np.array([COLOR_RANGES[c] for c in COLORS], dtype=np.float64)  # (6, 3, 2) per-channel [low, high]
TEMPLATE_PATTERNS = {
    family: re.compile("^" + re.escape(text).replace(re.escape("{color}"), "(" + "|".join(COLORS) + ")") + "$")
    for family, text in TEMPLATES.items()
}


def find_objects(image: np.ndarray) -> dict[str, dict[str, float | str]]:
    """Colour name -> centroid (x, y) and shape, read from the pixels alone.

    Objects are the connected regions that differ from the background (anti-aliased edges
    included); a region's colour is the range its clearly coloured pixels fall in, its shape comes
    from how much of its bounding box it fills (square ~1, circle ~pi/4).
    """
    pixels = image.astype(np.float64)  # (H, W, 3)
    background = np.median(pixels[[0, 0, -1, -1], [0, -1, 0, -1]], axis=0)
    regions, count = ndimage.label(np.abs(pixels - background).max(-1) > 40)
    inside = ((pixels[:, :, None] >= RANGES[..., 0] - 2) & (pixels[:, :, None] <= RANGES[..., 1] + 2)).all(-1)
    assert count == 6 and inside.sum(-1).max() <= 1, "expected six separate objects in distinct colour ranges"
    objects = {}
    for label in range(1, count + 1):
        ys, xs = np.nonzero(regions == label)
        color = list(COLORS)[int(np.bincount(inside[ys, xs].argmax(-1)[inside[ys, xs].any(-1)], minlength=6).argmax())]
        fill = len(xs) / ((xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1))
        objects[color] = {"x": xs.mean() + 0.5, "y": ys.mean() + 0.5, "shape": "square" if fill > 0.9 else "circle"}
    assert sorted(objects) == sorted(COLORS), "an object's colour is ambiguous"
    return objects


def expected_answer(objects, color: str, family: str) -> tuple[str, float]:
    """(answer, margin in pixels): how far the scene is from flipping the answer."""
    subject = objects[color]
    if family == "shape":
        return subject["shape"], math.inf
    if family in ("horizontal", "vertical"):
        coordinate = subject["x" if family == "horizontal" else "y"]
        return ("yes" if coordinate < IMAGE_SIZE / 2 else "no"), abs(coordinate - IMAGE_SIZE / 2)
    others = [o for c, o in objects.items() if c != color]
    if family == "count":
        return str(sum(o["shape"] == subject["shape"] for o in objects.values())), math.inf
    dist = sorted((math.dist((subject["x"], subject["y"]), (o["x"], o["y"])), o["shape"]) for o in others)
    if family == "closest_shape":
        return dist[0][1], dist[1][0] - dist[0][0]
    return dist[-1][1], dist[-1][0] - dist[-2][0]


@pytest.fixture(scope="module")
def split():
    return build_split(60, seed=3)


def test_every_answer_matches_an_independent_reading_of_the_pixels(split):
    checked = 0
    for start in range(0, len(split), 20):
        rows = split[start : start + 20]
        objects = find_objects(np.asarray(rows["image"][0].convert("RGB")))
        for question, answer, family in zip(rows["question"], rows["answer"], rows["question_family"]):
            color = TEMPLATE_PATTERNS[family].match(question).group(1)
            expected, margin = expected_answer(objects, color, family)
            if margin < 1.0:  # centroids from pixels are good to a fraction of a pixel: too close to call
                continue
            assert answer == expected, f"'{question}' answered {answer}, the pixels say {expected}"
            checked += 1
    assert checked >= 0.9 * len(split), f"only {checked} of {len(split)} answers were unambiguous"


def test_scenes_have_six_distinct_colours_and_no_overlaps():
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:IMAGE_SIZE:0.25, 0:IMAGE_SIZE:0.25]
    for _ in range(50):
        objects = sample_scene(rng)
        assert sorted(o.color for o in objects) == sorted(COLORS)
        masks = []
        for o in objects:
            assert 8 <= o.size <= 13 and o.shape in ("square", "circle")
            half = o.size / 2
            assert half <= o.x <= IMAGE_SIZE - half and half <= o.y <= IMAGE_SIZE - half, "object leaves the image"
            if o.shape == "square":
                masks.append((abs(xs - o.x) <= half) & (abs(ys - o.y) <= half))
            else:
                masks.append((xs - o.x) ** 2 + (ys - o.y) ** 2 <= half**2)
        coverage = np.sum(masks, axis=0)
        assert coverage.max() == 1, "two objects overlap"


def test_questions_follow_the_templates_ten_of_each_type_per_image(split):
    assert len(split) == 60 * 20
    assert set(split["question_family"]) == set(FAMILIES)
    for start in range(0, len(split), 20):
        rows = split[start : start + 20]
        assert len(set(rows["image_id"])) == 1
        assert rows["question_type"] == ["non-relational"] * 10 + ["relational"] * 10
        for question, family, qtype, answer in zip(
            rows["question"], rows["question_family"], rows["question_type"], rows["answer"]
        ):
            assert TEMPLATE_PATTERNS[family].match(question), question
            assert (qtype == "relational") == (family in ("closest_shape", "furthest_shape", "count"))
            allowed = {"shape": {"square", "circle"}, "horizontal": {"yes", "no"}, "vertical": {"yes", "no"},
                       "count": {str(n) for n in range(1, 7)}}.get(family, {"square", "circle"})
            assert answer in allowed
    image = np.asarray(split[0]["image"])
    assert image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    corners = image[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert corners.min() >= 240, "the background is white"


def test_split_sizes_match_the_paper():
    defaults = {k: v.default for k, v in inspect.signature(build_sort_of_clevr).parameters.items()}
    assert defaults["train_images"] + defaults["validation_images"] == 9_800
    assert defaults["test_images"] == 200
    small = build_sort_of_clevr(train_images=6, validation_images=2, test_images=3, seed=1)
    assert {k: len(v) for k, v in small.items()} == {"train": 120, "validation": 40, "test": 60}
    ids = [set(small[name]["image_id"]) for name in ("train", "validation", "test")]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])


def test_builder_is_deterministic_per_seed():
    first, again, other = (build_split(5, seed=s) for s in (7, 7, 8))
    assert dataset_fingerprint(first) == dataset_fingerprint(again)
    assert dataset_fingerprint(first) != dataset_fingerprint(other)
