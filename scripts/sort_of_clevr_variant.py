"""Write a Sort-of-CLEVR test set drawn by a second, independent renderer, to check that a trained VQA
model does not depend on the quirks of attnlab's builder.

This renderer follows the same specification with different choices, in the style of the widely
used public generator: integer object centres, a fixed size (11-pixel squares, circles of radius 5),
hard edges (no anti-aliasing), pure saturated colours (green (0, 255, 0), orange (255, 156, 0)),
a pure white background, and a different placement rule. Questions use the same templates; answers
are computed here from its own object list.

    python scripts/sort_of_clevr_variant.py --out data/sort_of_clevr_variant --images 200
    python eval.py ckpt_path=<run>/checkpoints/best.ckpt data.source=disk data.path=data/sort_of_clevr_variant
"""

from __future__ import annotations

import argparse
import io
import math
import random

import numpy as np
from datasets import Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage

SIZE, HALF = 75, 5
PALETTE = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "orange": (255, 156, 0),
    "gray": (128, 128, 128),
    "yellow": (255, 255, 0),
}
QUESTIONS = {
    "shape": ("non-relational", "What is the shape of the {} object?"),
    "horizontal": ("non-relational", "Is the {} object on the left side of the image?"),
    "vertical": ("non-relational", "Is the {} object on the top side of the image?"),
    "closest_shape": ("relational", "What is the shape of the object closest to the {} object?"),
    "furthest_shape": ("relational", "What is the shape of the object furthest from the {} object?"),
    "count": ("relational", "How many objects have the same shape as the {} object?"),
}


def place(rng: random.Random) -> list[tuple[str, str, int, int]]:
    """(colour, shape, x, y): integer centres whose 11-pixel boxes keep at least a 2-pixel gap."""
    objects: list[tuple[str, str, int, int]] = []
    for color in PALETTE:
        while True:
            x, y = rng.randint(HALF, SIZE - HALF - 1), rng.randint(HALF, SIZE - HALF - 1)
            if all(max(abs(x - ox), abs(y - oy)) > 2 * HALF + 2 for _, _, ox, oy in objects):
                objects.append((color, rng.choice(["square", "circle"]), x, y))
                break
    return objects


def draw(objects: list[tuple[str, str, int, int]]) -> bytes:
    pixels = np.full((SIZE, SIZE, 3), 255, dtype=np.uint8)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    for color, shape, x, y in objects:
        if shape == "square":
            mask = (np.abs(xs - x) <= HALF) & (np.abs(ys - y) <= HALF)
        else:
            mask = (xs - x) ** 2 + (ys - y) ** 2 <= HALF**2
        pixels[mask] = PALETTE[color]
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def reply(objects: list[tuple[str, str, int, int]], color: str, family: str) -> str:
    me = next(o for o in objects if o[0] == color)
    rest = [o for o in objects if o[0] != color]
    centre = (SIZE - 1) / 2  # pixel x spans [x, x + 1); its centre x + 0.5 < 37.5 means x < 37
    if family == "shape":
        return me[1]
    if family == "horizontal":
        return "yes" if me[2] < centre else "no"
    if family == "vertical":
        return "yes" if me[3] < centre else "no"
    if family == "count":
        return str(sum(o[1] == me[1] for o in objects))
    ranked = sorted(rest, key=lambda o: math.hypot(o[2] - me[2], o[3] - me[3]))
    return (ranked[0] if family == "closest_shape" else ranked[-1])[1]


def build(images: int, seed: int) -> Dataset:
    rng = random.Random(seed)
    rows: dict[str, list] = {k: [] for k in ("image", "question", "answer", "question_type", "question_family")}
    nonrel = [f for f, (t, _) in QUESTIONS.items() if t == "non-relational"]
    rel = [f for f, (t, _) in QUESTIONS.items() if t == "relational"]
    for _ in range(images):
        objects = place(rng)
        png = {"bytes": draw(objects), "path": None}
        for family in [rng.choice(nonrel) for _ in range(10)] + [rng.choice(rel) for _ in range(10)]:
            color = rng.choice(list(PALETTE))
            qtype, template = QUESTIONS[family]
            rows["image"].append(png)
            rows["question"].append(template.format(color))
            rows["answer"].append(reply(objects, color, family))
            rows["question_type"].append(qtype)
            rows["question_family"].append(family)
    features = Features({"image": Image(), **{k: Value("string") for k in rows if k != "image"}})
    return Dataset.from_dict(rows, features=features)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="directory for DatasetDict.save_to_disk (split 'test')")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--seed", type=int, default=2017)
    args = parser.parse_args()
    DatasetDict({"test": build(args.images, args.seed)}).save_to_disk(args.out)
    print(f"wrote {args.images} images x 20 questions to {args.out}")


if __name__ == "__main__":
    main()
