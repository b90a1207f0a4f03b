"""Offline default: Sort-of-CLEVR (Santoro et al. 2017) rendered and questioned per the paper's spec.

Each image: 75x75 RGB, white background, six non-overlapping objects, one per colour, each a
square or a circle of about 10 pixels. Ten non-relational and ten relational questions per image,
as natural-language text from fixed templates, answered from the object centres.

The renderer varies what the specification leaves open (object size 8-13 px, sub-pixel centres,
three rasterisations: anti-aliased, hard-edged and pixel-centre masks; colour shades, near-white
backgrounds), so a model trained here does not depend on one generator's quirks.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from datasets import Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage
from PIL import ImageDraw

IMAGE_SIZE = 75
# Nominal RGB of each colour, and the per-channel range an object's fill is drawn from: other
# generators use other shades (green (0, 128, 0) or (0, 255, 0), orange G = 128..165, ...).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 200, 0),
    "blue": (0, 0, 255),
    "orange": (255, 150, 0),
    "gray": (128, 128, 128),
    "yellow": (255, 255, 0),
}
COLOR_RANGES: dict[str, tuple[tuple[int, int], tuple[int, int], tuple[int, int]]] = {
    "red": ((200, 255), (0, 40), (0, 40)),
    "green": ((0, 40), (128, 255), (0, 40)),
    "blue": ((0, 40), (0, 40), (200, 255)),
    "orange": ((230, 255), (120, 180), (0, 40)),
    "gray": ((100, 160), (100, 160), (100, 160)),  # drawn as one level +- 8 per channel
    "yellow": ((220, 255), (220, 255), (0, 40)),
}
SHAPES = ("square", "circle")
NON_RELATIONAL = ("shape", "horizontal", "vertical")
RELATIONAL = ("closest_shape", "furthest_shape", "count")
FAMILIES = NON_RELATIONAL + RELATIONAL  # template order
TEMPLATES = {
    "shape": "What is the shape of the {color} object?",
    "horizontal": "Is the {color} object on the left side of the image?",
    "vertical": "Is the {color} object on the top side of the image?",
    "closest_shape": "What is the shape of the object closest to the {color} object?",
    "furthest_shape": "What is the shape of the object furthest from the {color} object?",
    "count": "How many objects have the same shape as the {color} object?",
}
FEATURES = Features(
    {
        "image": Image(),
        "image_id": Value("int32"),
        "question": Value("string"),
        "answer": Value("string"),
        "question_type": Value("string"),
        "question_family": Value("string"),
    }
)


@dataclass(frozen=True)
class SceneObject:
    color: str
    shape: str
    x: float  # centre, pixels from the left edge
    y: float  # centre, pixels from the top edge
    size: float  # square side or circle diameter


def sample_scene(rng: np.random.Generator, *, size_range: tuple[float, float] = (8.0, 13.0)) -> list[SceneObject]:
    """Six objects, one per colour, random shape and size, with centres far enough apart never to overlap."""
    objects: list[SceneObject] = []
    for color in COLORS:
        for _ in range(10_000):
            size = float(rng.uniform(*size_range))
            half = size / 2
            x, y = (float(v) for v in rng.uniform(half + 1, IMAGE_SIZE - half - 1, size=2))
            # circumscribed circles (radius side / sqrt 2) plus a 1-pixel gap cannot touch
            if all(math.dist((x, y), (o.x, o.y)) > (size + o.size) / math.sqrt(2) + 1 for o in objects):
                objects.append(SceneObject(color, SHAPES[int(rng.integers(2))], x, y, size))
                break
        else:  # pragma: no cover - six 13-px objects always fit in 75x75
            raise RuntimeError("could not place six non-overlapping objects")
    return objects


RENDER_STYLES = ("antialiased", "hard_edges", "pixel_centres")


def render(objects: list[SceneObject], rng: np.random.Generator) -> PILImage.Image:
    """Draw the scene in one of three rasterisations, drawn uniformly; fills vary within each colour.

    ``antialiased``: PIL shapes on a 4x canvas, box-filtered down. ``hard_edges``: PIL shapes at 1x.
    ``pixel_centres``: a pixel takes the colour when its centre lies inside the shape (|dx|, |dy| <=
    side / 2 for squares, dx^2 + dy^2 <= r^2 for circles), the rule of numpy/OpenCV generators,
    whose small circles have flat sides and one-pixel tips.
    """
    style = RENDER_STYLES[int(rng.integers(len(RENDER_STYLES)))]
    background = tuple(int(v) for v in rng.integers(245, 256, size=3))
    fills = [_shade(obj.color, rng) for obj in objects]
    if style == "pixel_centres":
        pixels = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        pixels[:] = background
        ys, xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] + 0.5  # pixel centres
        for obj, fill in zip(objects, fills, strict=True):
            dx, dy = xs - obj.x, ys - obj.y
            half = obj.size / 2
            inside = (np.abs(dx) <= half) & (np.abs(dy) <= half) if obj.shape == "square" else dx**2 + dy**2 <= half**2
            pixels[inside] = fill
        return PILImage.fromarray(pixels)
    scale = 4 if style == "antialiased" else 1
    canvas = PILImage.new("RGB", (IMAGE_SIZE * scale, IMAGE_SIZE * scale), background)
    draw = ImageDraw.Draw(canvas)
    for obj, fill in zip(objects, fills, strict=True):
        half = obj.size / 2
        box = [(obj.x - half) * scale, (obj.y - half) * scale, (obj.x + half) * scale - 1, (obj.y + half) * scale - 1]
        (draw.rectangle if obj.shape == "square" else draw.ellipse)(box, fill=fill)
    if scale > 1:
        canvas = canvas.resize((IMAGE_SIZE, IMAGE_SIZE), PILImage.Resampling.BOX)
    return canvas


def _shade(color: str, rng: np.random.Generator) -> tuple[int, int, int]:
    """A random fill inside the colour's range."""
    if color == "gray":
        level = int(rng.integers(108, 153))
        return tuple(int(v) for v in np.clip(level + rng.integers(-8, 9, size=3), 100, 160))
    return tuple(int(rng.integers(low, high + 1)) for low, high in COLOR_RANGES[color])


def answer(objects: list[SceneObject], color: str, family: str) -> str:
    """The answer to `family`'s template about the `color` object, from object centres alone."""
    subject = next(o for o in objects if o.color == color)
    others = [o for o in objects if o is not subject]
    if family == "shape":
        return subject.shape
    if family == "horizontal":
        return "yes" if subject.x < IMAGE_SIZE / 2 else "no"
    if family == "vertical":
        return "yes" if subject.y < IMAGE_SIZE / 2 else "no"
    distance = [math.dist((subject.x, subject.y), (o.x, o.y)) for o in others]
    if family == "closest_shape":
        return others[int(np.argmin(distance))].shape
    if family == "furthest_shape":
        return others[int(np.argmax(distance))].shape
    if family == "count":
        return str(sum(o.shape == subject.shape for o in objects))  # includes the subject itself
    raise ValueError(f"unknown question family '{family}'; expected one of {FAMILIES}")


def scene_questions(
    objects: list[SceneObject], rng: np.random.Generator, *, per_type: int = 10
) -> list[dict[str, str]]:
    """`per_type` non-relational then `per_type` relational questions, colour and family drawn at random."""
    rows = []
    for question_type, families in (("non-relational", NON_RELATIONAL), ("relational", RELATIONAL)):
        for _ in range(per_type):
            color = list(COLORS)[int(rng.integers(len(COLORS)))]
            family = families[int(rng.integers(len(families)))]
            rows.append(
                {
                    "question": TEMPLATES[family].format(color=color),
                    "answer": answer(objects, color, family),
                    "question_type": question_type,
                    "question_family": family,
                }
            )
    return rows


def _png(image: PILImage.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def build_split(num_images: int, *, seed: int, first_image_id: int = 0, per_type: int = 10) -> Dataset:
    """`num_images` scenes x 2*`per_type` questions, one row per question (the image repeated per row)."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list] = {name: [] for name in FEATURES}
    for offset in range(num_images):
        objects = sample_scene(rng)
        png = {"bytes": _png(render(objects, rng)), "path": None}
        for row in scene_questions(objects, rng, per_type=per_type):
            columns["image"].append(png)
            columns["image_id"].append(first_image_id + offset)
            for key, value in row.items():
                columns[key].append(value)
    return Dataset.from_dict(columns, features=FEATURES)


def build_sort_of_clevr(
    *, train_images: int = 9_600, validation_images: int = 200, test_images: int = 200, seed: int = 0
) -> DatasetDict:
    """The paper's 9,800 training images (here 9,600 train + 200 validation) and 200 test images.

    Schema: ``image`` (PNG), ``image_id``, ``question``, ``answer``, ``question_type``
    (relational / non-relational), ``question_family`` (one of FAMILIES).
    """
    sizes = {"train": train_images, "validation": validation_images, "test": test_images}
    splits, first_id = {}, 0
    for index, (name, count) in enumerate(sizes.items()):
        splits[name] = build_split(count, seed=seed * 1000 + index, first_image_id=first_id)
        first_id += count
    return DatasetDict(splits)
