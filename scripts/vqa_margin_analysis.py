"""Accuracy on closest/furthest questions by how close the scene is to a tie.

Reads `predictions.jsonl` written by `eval.py` on the builder's Sort-of-CLEVR test split, re-creates
those scenes with the builder (same seed and sizes), and buckets each closest/furthest question by
its margin: the distance in pixels between the answer object and the runner-up (second closest or
second furthest). Errors concentrated at small margins mean positions are not precise enough;
errors at every margin mean the comparison itself is not learned.

    python eval.py ckpt_path=<run>/checkpoints/best.ckpt
    python scripts/vqa_margin_analysis.py <eval output dir>/predictions.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tasks` lives at the repository root
from tasks.vqa.builder import COLORS, TEMPLATES, render, sample_scene, scene_questions

BUCKETS = (0.0, 2.0, 4.0, 8.0, 16.0, math.inf)


def test_scenes(*, seed: int, test_images: int) -> list[tuple[list, list[dict[str, str]]]]:
    """The builder's test split as (objects, questions) per image, drawn in `build_split`'s order."""
    rng = np.random.default_rng(seed * 1000 + 2)  # the test split's seed in build_sort_of_clevr
    scenes = []
    for _ in range(test_images):
        objects = sample_scene(rng)
        render(objects, rng)  # consumes the same random numbers as the builder
        scenes.append((objects, scene_questions(objects, rng)))
    return scenes


def margin(objects: list, color: str, family: str) -> float:
    """Pixels between the answer object's distance to the subject and the runner-up's."""
    subject = next(o for o in objects if o.color == color)
    distances = sorted(math.dist((subject.x, subject.y), (o.x, o.y)) for o in objects if o is not subject)
    return distances[1] - distances[0] if family == "closest_shape" else distances[-1] - distances[-2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", type=Path)
    parser.add_argument("--seed", type=int, default=0, help="data.builder_seed of the run")
    parser.add_argument("--test-images", type=int, default=200)
    args = parser.parse_args()

    scenes = test_scenes(seed=args.seed, test_images=args.test_images)
    per_image = len(scenes[0][1])
    totals: dict[tuple[str, int], list[float]] = defaultdict(list)
    for line in args.predictions.read_text().splitlines():
        record = json.loads(line)
        objects, questions = scenes[record["row"] // per_image]
        question = questions[record["row"] % per_image]
        if question["question"] != record["question"]:
            raise SystemExit(f"row {record['row']}: predictions are not for this builder's test split (seed?)")
        family = question["question_family"]
        if family not in ("closest_shape", "furthest_shape"):
            continue
        color = next(c for c in COLORS if TEMPLATES[family].format(color=c) == question["question"])
        gap = margin(objects, color, family)
        bucket = next(i for i in range(len(BUCKETS) - 1) if gap < BUCKETS[i + 1])
        totals[(family, bucket)].append(record["score"])

    print("| margin (px) | " + " | ".join(f"{BUCKETS[i]:g}-{BUCKETS[i + 1]:g}" for i in range(len(BUCKETS) - 1)) + " |")
    print("| --- |" + " ---: |" * (len(BUCKETS) - 1))
    for family in ("closest_shape", "furthest_shape"):
        cells = []
        for i in range(len(BUCKETS) - 1):
            scores = totals[(family, i)]
            cells.append(f"{100 * sum(scores) / len(scores):.1f} % (n={len(scores)})" if scores else "-")
        print(f"| {family} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
