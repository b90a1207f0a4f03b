"""Offline default: "cluttered digits", handwritten digits scattered on a noisy canvas with pixel labels.

Each image is a dark ``canvas_size`` x ``canvas_size`` grey canvas holding ``min_digits``..``max_digits``
(uniform) handwritten digits cut from scikit-learn's 1,797 8x8 digits (values 0..16), drawn bright on
dark like the source, over unlabelled clutter and under Gaussian noise. The segmentation target marks
every digit's pixels with its class; many digits are small, so a model has to find them among clutter.

Glyph pools: the 1,797 source images are split per digit class 70/10/20 % into disjoint train,
validation and test pools (fixed by ``seed``, see :func:`glyph_pools`), so test digits are handwriting
never seen in training; clutter is cut from the same split's pool.

Rendering one digit: its 8x8 glyph is cropped to its nonzero bounding box, resized (bicubic, float) to
height ``h`` keeping its aspect ratio (width >= 1), rotated by a uniform angle in ``[-max_rotation,
max_rotation]`` (bilinear, expanded) and scaled to peak intensity 1. Pixels >= 0.5 are the digit,
pixels in [0.15, 0.5) its anti-aliased rim; faint pixels more than 2 px (Chebyshev) from the digit's
own pixels are erased, so a rim always hugs its digit. ``heights`` reports ``h`` (before rotation).
``h`` is drawn as a mixture: with probability 1/3 uniform over the small heights ``[min_height,
SMALL_HEIGHT - 1]``, else uniform over ``[SMALL_HEIGHT, max_height]`` (plain uniform over ``[min_height,
max_height]`` when that range does not straddle ``SMALL_HEIGHT``), so about a third of digits are small.

Placement: a random position with the whole rim-and-digit patch inside the canvas. A placement is
rejected when the new digit's pixels overlap already placed digit pixels by more than 20 % of its own
pixels, or when drawing it would leave an earlier digit with under half of its digit pixels visible;
up to 20 positions are tried per size, 10 sizes (height and angle) per digit, 50 attempts per image
(the same digits, all placed anew); then a :class:`RuntimeError` says the canvas is too crowded.

Compositing: clutter is drawn first, then the digits in order. A digit's own pixels overwrite whatever
is below them, in the image and in the mask (later digits lie on top); the rest of its patch is
max-composited into the image (it never darkens what is below) and its rim pixels become ``IGNORE_INDEX``
only where the mask was background. So, before noise and without clutter, the mask is exactly a
threshold of the image: digit >= 0.5, ignore in [0.15, 0.5), background < 0.15.

Clutter (mask stays background): ``clutter`` items per image, each with probability 1/2 a fragment of a
random glyph of the pool (a 2..5 x 2..5 sub-rectangle around an inked pixel, scaled like a digit and
rotated by any angle) or a thin stroke (a 1-2 px PIL line, 3..max(3, max_height // 2) px long), at peak
intensity uniform in [0.3, 0.7], max-composited.

Noise: Gaussian with std ``noise_std`` is added to the [0, 1] image, which is clipped and scaled to
uint8 0..255.

Schema: ``image`` (PIL L), ``annotation`` (PIL L: 0 background, ``d + 1`` for digit ``d``, 255 ignore),
``small_objects`` (PIL L: 1 on the visible digit pixels of digits with ``h < SMALL_HEIGHT``, else 0),
``digits`` and ``heights`` (per placed digit, in drawing order). Each split draws from its own numpy
Generator seeded by ``seed`` and the split name: the same arguments give the identical dataset.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from datasets import Dataset, DatasetDict, Features, Image, Sequence, Value
from PIL import Image as PILImage
from PIL import ImageDraw
from sklearn.datasets import load_digits

CLASS_NAMES = ["background", *(str(d) for d in range(10))]
IGNORE_INDEX = 255
SMALL_HEIGHT = 12
SPLITS = ("train", "validation", "test")
POOL_FRACTIONS = (0.7, 0.1, 0.2)

DIGIT_LEVEL = 0.5  # patch intensity at or above which a pixel is the digit
RIM_LEVEL = 0.15  # [RIM_LEVEL, DIGIT_LEVEL): anti-aliased rim, labelled IGNORE_INDEX
RIM_WIDTH = 2  # px (Chebyshev) a rim may reach from the digit's own pixels
SMALL_PROBABILITY = 1 / 3
MAX_OVERLAP = 0.2  # of the new digit's pixels that may cover earlier digit pixels
MIN_VISIBLE = 0.5  # of each digit's pixels that must stay visible
POSITION_TRIES, SIZE_TRIES, IMAGE_TRIES = 20, 10, 50
CLUTTER_CONTRAST = (0.3, 0.7)

FEATURES = Features(
    {
        "image": Image(),
        "annotation": Image(),
        "small_objects": Image(),
        "digits": Sequence(Value("int64")),
        "heights": Sequence(Value("int64")),
    }
)


@dataclass(frozen=True)
class _Spec:
    canvas_size: int
    min_digits: int
    max_digits: int
    min_height: int
    max_height: int
    max_rotation: float
    clutter: int
    noise_std: float


def glyph_pools(seed: int = 0) -> dict[str, np.ndarray]:
    """Sorted source indices (into ``load_digits()``) of each split's disjoint glyph pool.

    Every digit class is split 70/10/20 % into train/validation/test by a Generator seeded by `seed`.
    """
    targets = load_digits().target
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
    for digit in range(10):
        rows = rng.permutation(np.flatnonzero(targets == digit))
        cuts = np.rint(np.cumsum(POOL_FRACTIONS)[:-1] * len(rows)).astype(int)
        for split, part in zip(SPLITS, np.split(rows, cuts), strict=True):
            parts[split].append(part)
    return {split: np.sort(np.concatenate(parts[split])) for split in SPLITS}


def build_cluttered_digits(
    *,
    train_size: int = 8000,
    validation_size: int = 500,
    test_size: int = 1000,
    canvas_size: int = 64,
    min_digits: int = 1,
    max_digits: int = 4,
    min_height: int = 6,
    max_height: int = 28,
    max_rotation: float = 20.0,
    clutter: int = 3,
    noise_std: float = 0.06,
    seed: int = 0,
) -> DatasetDict:
    """Train/validation/test splits of cluttered-digit images with segmentation masks (see module doc)."""
    sizes = {"train": train_size, "validation": validation_size, "test": test_size}
    for split, size in sizes.items():
        if size < 1:
            raise ValueError(f"{split}_size={size} must be >= 1")
    if canvas_size < 1:
        raise ValueError(f"canvas_size={canvas_size} must be >= 1")
    if min_digits < 0:
        raise ValueError(f"min_digits={min_digits} must be >= 0")
    if max_digits < min_digits:
        raise ValueError(f"min_digits={min_digits} > max_digits={max_digits}")
    if min_height < 1:
        raise ValueError(f"min_height={min_height} must be >= 1")
    if min_height > max_height:
        raise ValueError(f"min_height={min_height} > max_height={max_height}")
    if max_height > canvas_size:
        raise ValueError(f"max_height={max_height} > canvas_size={canvas_size}")
    if not 0.0 <= max_rotation <= 180.0:
        raise ValueError(f"max_rotation={max_rotation} must be in [0, 180]")
    if clutter < 0:
        raise ValueError(f"clutter={clutter} must be >= 0")
    if noise_std < 0:
        raise ValueError(f"noise_std={noise_std} must be >= 0")
    spec = _Spec(
        canvas_size, min_digits, max_digits, min_height, max_height, max_rotation, clutter, noise_std
    )

    source = load_digits()
    glyphs = source.images.astype(np.float32) / 16.0  # (1797, 8, 8) in [0, 1]
    targets = source.target.astype(np.int64)
    pools = glyph_pools(seed)
    splits = {}
    for split, size in sizes.items():
        rng = np.random.default_rng([seed, zlib.crc32(split.encode())])
        rows = [_render(rng, glyphs, targets, pools[split], spec) for _ in range(size)]
        splits[split] = Dataset.from_dict(
            {
                "image": [PILImage.fromarray(r[0]) for r in rows],
                "annotation": [PILImage.fromarray(r[1]) for r in rows],
                "small_objects": [PILImage.fromarray(r[2]) for r in rows],
                "digits": [r[3] for r in rows],
                "heights": [r[4] for r in rows],
            },
            features=FEATURES,
        )
    return DatasetDict(splits)


def _render(
    rng: np.random.Generator, glyphs: np.ndarray, targets: np.ndarray, pool: np.ndarray, spec: _Spec
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int], list[int]]:
    """One image: (image, annotation, small_objects) uint8 (S, S) arrays, digits, heights."""
    size = spec.canvas_size
    background = np.zeros((size, size), np.float32)
    for _ in range(spec.clutter):
        _draw_clutter(rng, background, glyphs[rng.choice(pool)], spec)
    chosen = rng.choice(pool, size=int(rng.integers(spec.min_digits, spec.max_digits + 1)))
    for _ in range(IMAGE_TRIES):
        placed = _place_digits(rng, background, glyphs[chosen], targets[chosen], spec)
        if placed is not None:
            break
    else:
        raise RuntimeError(
            f"could not place {len(chosen)} digits of height <= {spec.max_height} on a {size}x{size} canvas "
            f"in {IMAGE_TRIES} attempts: lower max_digits or max_height, or raise canvas_size"
        )
    image, mask, instance, heights = placed
    small = np.array([False] + [h < SMALL_HEIGHT for h in heights])[instance]  # (S, S): instance 0 = none
    noisy = image + rng.normal(0.0, spec.noise_std, image.shape) if spec.noise_std > 0 else image
    pixels = np.rint(np.clip(noisy, 0.0, 1.0) * 255.0).astype(np.uint8)
    return pixels, mask, small.astype(np.uint8), targets[chosen].tolist(), heights


def _place_digits(
    rng: np.random.Generator, background: np.ndarray, glyphs: np.ndarray, digits: np.ndarray, spec: _Spec
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]] | None:
    """Draws `glyphs` (n, 8, 8) of `digits` (n,) in order over `background`; None if one finds no place.

    Returns the [0, 1] image, the annotation, the instance map (k + 1 on the visible pixels of the
    k-th digit, else 0) and the heights.
    """
    size = spec.canvas_size
    image = background.copy()
    mask = np.zeros((size, size), np.uint8)
    instance = np.zeros((size, size), np.int64)
    totals: list[int] = []  # digit pixels of each placed digit, as drawn
    heights: list[int] = []
    for glyph, digit_value in zip(glyphs, digits, strict=True):
        spot = _find_spot(rng, glyph, instance, totals, spec)
        if spot is None:
            return None
        patch, digit, (y, x), height = spot
        ph, pw = patch.shape
        window = (slice(y, y + ph), slice(x, x + pw))
        rim = (patch >= RIM_LEVEL) & ~digit
        image[window] = np.where(digit, patch, np.maximum(image[window], patch))
        mask[window][rim & (mask[window] == 0)] = IGNORE_INDEX
        mask[window][digit] = digit_value + 1
        instance[window][digit] = len(totals) + 1
        totals.append(int(digit.sum()))
        heights.append(height)
    return image, mask, instance, heights


def _find_spot(
    rng: np.random.Generator, glyph: np.ndarray, instance: np.ndarray, totals: list[int], spec: _Spec
) -> tuple[np.ndarray, np.ndarray, tuple[int, int], int] | None:
    """A rendered patch, its digit pixels, a top-left corner that passes the placement rules, its height."""
    size = spec.canvas_size
    for _ in range(SIZE_TRIES):
        height = _sample_height(rng, spec.min_height, spec.max_height)
        patch = _render_digit(glyph, height, rng.uniform(-spec.max_rotation, spec.max_rotation))
        ph, pw = patch.shape
        if ph > size or pw > size:
            continue
        digit = patch >= DIGIT_LEVEL
        count = int(digit.sum())
        for _ in range(POSITION_TRIES):
            y, x = int(rng.integers(0, size - ph + 1)), int(rng.integers(0, size - pw + 1))
            covered = instance[y : y + ph, x : x + pw][digit]  # earlier instance ids under the new digit
            if np.count_nonzero(covered) > MAX_OVERLAP * count:
                continue
            if totals:
                visible = np.bincount(instance.ravel(), minlength=len(totals) + 1)[1:]
                lost = np.bincount(covered, minlength=len(totals) + 1)[1:]
                if np.any(visible - lost < MIN_VISIBLE * np.asarray(totals)):
                    continue
            return patch, digit, (y, x), height
    return None


def _sample_height(rng: np.random.Generator, low: int, high: int) -> int:
    """Glyph height: 1/3 small ([low, SMALL_HEIGHT - 1]), 2/3 large ([SMALL_HEIGHT, high]) when both exist."""
    if low < SMALL_HEIGHT <= high:
        low, high = (low, SMALL_HEIGHT - 1) if rng.random() < SMALL_PROBABILITY else (SMALL_HEIGHT, high)
    return int(rng.integers(low, high + 1))


def _render_digit(glyph: np.ndarray, height: int, angle: float) -> np.ndarray:
    """Intensity patch in [0, 1] of an 8x8 `glyph` at `height` px, rotated by `angle` degrees.

    The patch is cropped to its nonzero pixels, peaks at 1, and is 0 beyond RIM_WIDTH of its digit pixels.
    """
    rows, cols = np.flatnonzero(glyph.any(axis=1)), np.flatnonzero(glyph.any(axis=0))
    crop = glyph[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # (h0, w0)
    width = max(1, round(crop.shape[1] * height / crop.shape[0]))
    scaled = PILImage.fromarray(np.ascontiguousarray(crop)).resize((width, height), PILImage.BICUBIC)
    rotated = scaled.rotate(angle, resample=PILImage.BILINEAR, expand=True, fillcolor=0.0)
    patch = np.clip(np.asarray(rotated, np.float32), 0.0, None)
    patch = np.minimum(patch / patch.max(), 1.0)
    patch[~_dilate(patch >= DIGIT_LEVEL, RIM_WIDTH)] = 0.0
    rows, cols = np.flatnonzero(patch.any(axis=1)), np.flatnonzero(patch.any(axis=0))
    return patch[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # (ph, pw)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of `mask` by a (2 radius + 1)^2 square."""
    out = mask.copy()
    for axis in (0, 1):
        grown = out.copy()
        for shift in range(1, radius + 1):
            lead = [slice(None)] * 2
            lag = [slice(None)] * 2
            lead[axis], lag[axis] = slice(shift, None), slice(None, -shift)
            grown[tuple(lag)] |= out[tuple(lead)]
            grown[tuple(lead)] |= out[tuple(lag)]
        out = grown
    return out


def _draw_clutter(rng: np.random.Generator, canvas: np.ndarray, glyph: np.ndarray, spec: _Spec) -> None:
    """Max-composites one unlabelled item into `canvas` (S, S): a glyph fragment or a thin stroke."""
    size = spec.canvas_size
    contrast = rng.uniform(*CLUTTER_CONTRAST)
    if rng.random() < 0.5:
        ys, xs = np.nonzero(glyph)
        ink = int(rng.integers(len(ys)))
        rows, cols = int(rng.integers(2, 6)), int(rng.integers(2, 6))
        y0 = int(np.clip(ys[ink] - rng.integers(rows), 0, 8 - rows))
        x0 = int(np.clip(xs[ink] - rng.integers(cols), 0, 8 - cols))
        piece = glyph[y0 : y0 + rows, x0 : x0 + cols]
        scale = rng.uniform(spec.min_height, spec.max_height) / 8.0
        shape = (max(1, round(cols * scale)), max(1, round(rows * scale)))
        scaled = PILImage.fromarray(np.ascontiguousarray(piece)).resize(shape, PILImage.BICUBIC)
        rotated = scaled.rotate(rng.uniform(-180.0, 180.0), resample=PILImage.BILINEAR, expand=True)
        patch = np.clip(np.asarray(rotated, np.float32), 0.0, None)[:size, :size]
        patch *= contrast / max(float(patch.max()), 1e-6)
        ph, pw = patch.shape
        y, x = int(rng.integers(0, size - ph + 1)), int(rng.integers(0, size - pw + 1))
        window = canvas[y : y + ph, x : x + pw]
        np.maximum(window, patch, out=window)
    else:
        length = rng.uniform(3.0, max(3, spec.max_height // 2))
        angle = rng.uniform(0.0, 2.0 * np.pi)
        y0, x0 = rng.uniform(0, size, 2)
        layer = PILImage.new("L", (size, size))
        end = (x0 + length * np.cos(angle), y0 + length * np.sin(angle))
        ImageDraw.Draw(layer).line([(x0, y0), end], fill=round(contrast * 255), width=int(rng.integers(1, 3)))
        np.maximum(canvas, np.asarray(layer, np.float32) / 255.0, out=canvas)
