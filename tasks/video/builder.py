"""Offline default: "moving digits", short grey clips of a handwritten digit labelled by what it does over time.

Each clip has ``num_frames`` T >= 2 frames of ``image_size`` x ``image_size`` (even) grey uint8 pixels and
shows one *actor*, a handwritten digit cut from scikit-learn's 1,797 8x8 digits (values 0..16), over a
static background with 0..2 static *distractor* digits. The label says what the actor does:

====  ===========  ==========================================================================
  0   move_left    the actor's centre x decreases by 8..16 px over the clip (y constant)
  1   move_right   reversal of move_left: x increases by 8..16 px
  2   move_up      centre y decreases by 8..16 px (image coordinates, y down; x constant)
  3   move_down    reversal of move_up: y increases
  4   rotate_cw    turns clockwise *on screen* by 60..150 degrees
  5   rotate_ccw   reversal of rotate_cw: turns counter-clockwise
  6   zoom_in      its scale grows by a factor 1.5..2.2
  7   zoom_out     reversal of zoom_in: its scale shrinks by that factor
  8   fade_in      its opacity rises from 0.1..0.3 to 1.0
  9   fade_out     reversal of fade_in: opacity falls from 1.0 to 0.1..0.3
====  ===========  ==========================================================================

Lengths are given for 32 px frames and scale with ``image_size / 32``. Every uniform draw below is
``rng.uniform(low, high)`` (``rng.integers`` for counts).

Time reversal is exact: a clip is fully described by a :class:`ClipSpec`, rendered by :func:`render_clip`,
and :func:`reverse_spec` gives the clip played backwards, pixel for pixel:
``render_clip(reverse_spec(s)) == render_clip(s)[::-1]`` with the opposite label (see :data:`OPPOSITE`).
Only the forward classes (even labels) are sampled; an odd label is drawn as its even partner and then
reversed, so each pair of classes (move_left/move_right, ...) is the same distribution of clips played in
opposite directions. In particular the unordered set of frames carries no information about the
direction: a model must use frame order to tell a pair apart.

Actor state: centre ``(x, y)`` in pixel-index coordinates ((0, 0) is the centre of the top-left pixel), an
``angle`` in degrees, counter-clockwise on screen when positive (so clockwise turning makes it
*decrease*), a ``scale`` in canvas px per 8x8 source pixel, and an opacity ``alpha``. At frame ``t`` the
state is the linear interpolation between the clip's start and end state at ``u = t / (T - 1)``, computed
as ``(start * (T - 1 - t) + end * t) / (T - 1)`` so that reversing start and end gives bit-identical states.

Sampling one forward clip (:func:`sample_spec`), with ``k = image_size / 32``:

- the actor: a uniform glyph from the split's pool; a tilt uniform in [-15, 15] degrees, a scale uniform
  in [1.1, 1.6] k and an opacity uniform in [0.75, 1.0], each constant over the clip unless it is the
  class's own parameter;
- move_left / move_up: a distance uniform in [8, 16] k px along -x / -y; rotate_cw: a turn uniform in
  [60, 150] degrees, the angle going from tilt + turn / 2 to tilt - turn / 2; zoom_in: a start scale
  uniform in [0.85, 1.1] k times a factor uniform in [1.5, 2.2]; fade_in: opacity from a uniform
  [0.1, 0.3] to 1.0;
- position: the centre path (a point, or the segment of a move) lies uniformly at random inside the
  canvas shrunk by a margin of 4.5 x the largest scale of the clip (px), so the actor stays mostly
  inside the frame at every frame (the path is centred when it does not fit);
- distractors: their number uniform in 0..``max_distractors`` (default 2), each a uniform glyph of the
  same pool (any digit, possibly the actor's), tilt uniform in [-15, 15], scale uniform in [0.9, 1.4] k,
  opacity uniform in [0.4, 0.9]; each takes, of 8 uniform candidate centres inside the margin, the one
  farthest from the actor's path and from earlier distractors. They never move or change;
- background: white Gaussian noise smoothed by a Gaussian filter of sigma 1.5 k px, rescaled to [0, 1]
  and multiplied by a level uniform in [0, 0.25]; it is static;
- per-frame noise: std uniform in [0, 0.05] and a seed from ``rng``.

Rendering (:func:`render_clip`): glyphs are upsampled once (:func:`upsample_glyphs`: zero-padded by one
source pixel, cubic-spline zoom x4, clipped to [0, 1], so a (40, 40) float glyph) and warped onto the
canvas by an affine map with bilinear interpolation (zero outside the glyph). Intensities are in [0, 1]
and glyph values act as white ink of coverage ``c = alpha * glyph``, composited *over* what lies below:
``out = below + c * (1 - below)``, in the order background, distractors, actor. Per-frame Gaussian noise
``rng(noise_seed).normal(0, noise_std, (T, H, W))`` is added (in reversed frame order when
``reversed_noise``), then the frames are clipped to [0, 1] and rounded to uint8 0..255.

Glyph pools: the 1,797 source images are split per digit class 70/10/20 % into disjoint train,
validation and test pools (fixed by ``seed``, see :func:`glyph_pools`): the test actors and distractors
are handwriting never seen in training.

Dataset (:func:`build_moving_digits`): each split draws from its own numpy Generator seeded by ``seed``
and the split name (``zlib.crc32``); its labels are ``i % 10`` for ``i < size``, shuffled, so they are
balanced. Clip ``i`` is written as an MP4 (H.264, yuv420p) to ``directory/videos/<split>/<i:06d>.mp4``;
the rows hold ``video`` (that path relative to ``directory``), ``label``, ``digit`` (the actor's digit
class) and ``id`` (``"<split>-<i:06d>"``). The same arguments give identical clips (rendered frames;
:func:`clip_specs` yields the specs of a split again without encoding anything).
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from scipy import ndimage
from sklearn.datasets import load_digits

from attnlab.data.video import write_video

CLASS_NAMES = [
    "move_left",
    "move_right",
    "move_up",
    "move_down",
    "rotate_cw",
    "rotate_ccw",
    "zoom_in",
    "zoom_out",
    "fade_in",
    "fade_out",
]
OPPOSITE: dict[int, int] = {label: label ^ 1 for label in range(len(CLASS_NAMES))}  # 0<->1, 2<->3, ...
FEATURES = Features(
    {
        "video": Value("string"),
        "label": ClassLabel(names=CLASS_NAMES),
        "digit": Value("int64"),
        "id": Value("string"),
    }
)
SPLITS = ("train", "validation", "test")
POOL_FRACTIONS = (0.7, 0.1, 0.2)

UPSAMPLE = 4  # glyph px per source px
GLYPH_PAD = 1  # source px of zeros around the 8x8 glyph before upsampling
GLYPH_SIZE = (8 + 2 * GLYPH_PAD) * UPSAMPLE  # 40: side of an upsampled glyph
REFERENCE_SIZE = 32  # the lengths below are for 32 px frames and scale with image_size / 32

MOVE_DISTANCE = (8.0, 16.0)  # px
TURN = (60.0, 150.0)  # degrees
TILT = 15.0  # degrees, either way
SCALE = (1.1, 1.6)  # px per source px
ZOOM_START_SCALE = (0.85, 1.1)
ZOOM_FACTOR = (1.5, 2.2)
ALPHA = (0.75, 1.0)
FADE_START = (0.1, 0.3)
DISTRACTOR_SCALE = (0.9, 1.4)
DISTRACTOR_ALPHA = (0.4, 0.9)
MARGIN = 4.5  # source px around a centre kept inside the canvas
PLACEMENT_CANDIDATES = 8
NOISE_STD = (0.0, 0.05)
BACKGROUND_LEVEL = (0.0, 0.25)
BACKGROUND_SIGMA = 1.5  # px


@dataclass(frozen=True)
class ActorState:
    """Where a glyph is and how it looks: centre (px), angle (degrees, counter-clockwise on screen), scale
    (canvas px per source px) and opacity alpha in [0, 1]."""

    x: float
    y: float
    angle: float
    scale: float
    alpha: float

    def __post_init__(self) -> None:
        for field in ("x", "y", "angle", "scale", "alpha"):
            object.__setattr__(self, field, float(getattr(self, field)))  # plain floats (numpy scalars too)
        if self.scale <= 0:
            raise ValueError(f"scale={self.scale} must be > 0")

    def as_array(self) -> np.ndarray:
        """(5,) float64: x, y, angle, scale, alpha."""
        return np.array([self.x, self.y, self.angle, self.scale, self.alpha], np.float64)


@dataclass(frozen=True, eq=False)
class ClipSpec:
    """Everything :func:`render_clip` needs to draw one clip (see the module doc).

    The arrays are stored as read-only views. Equality compares every field, arrays by value; a spec is
    unhashable.
    """

    label: int
    digit: int  # the actor's digit class, -1 if unknown
    num_frames: int
    image_size: int
    glyph: np.ndarray  # (G, G) float in [0, 1], from upsample_glyphs
    start: ActorState
    end: ActorState
    background: np.ndarray  # (H, W) float in [0, 1], static
    distractor_glyphs: tuple[np.ndarray, ...]  # each (G, G)
    distractor_states: tuple[ActorState, ...]  # static
    noise_seed: int
    noise_std: float
    reversed_noise: bool = False

    def __post_init__(self) -> None:
        for field, kind in _SCALARS.items():
            object.__setattr__(self, field, kind(getattr(self, field)))  # plain Python scalars
        if not 0 <= self.label < len(CLASS_NAMES):
            raise ValueError(f"label={self.label} must be in [0, {len(CLASS_NAMES)})")
        if self.num_frames < 2:
            raise ValueError(f"num_frames={self.num_frames} must be >= 2")
        if self.image_size < 1:
            raise ValueError(f"image_size={self.image_size} must be >= 1")
        if len(self.distractor_glyphs) != len(self.distractor_states):
            raise ValueError(
                f"{len(self.distractor_glyphs)} distractor glyphs but {len(self.distractor_states)} states"
            )
        if self.noise_std < 0:
            raise ValueError(f"noise_std={self.noise_std} must be >= 0")
        object.__setattr__(self, "glyph", _frozen(self.glyph, 2))
        object.__setattr__(self, "background", _frozen(self.background, 2))
        object.__setattr__(self, "distractor_glyphs", tuple(_frozen(g, 2) for g in self.distractor_glyphs))
        object.__setattr__(self, "distractor_states", tuple(self.distractor_states))
        if self.background.shape != (self.image_size, self.image_size):
            raise ValueError(f"background {self.background.shape} is not {self.image_size}x{self.image_size}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClipSpec):
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name)) for f in dataclasses.fields(ClipSpec))

    __hash__ = None  # type: ignore[assignment]


_SCALARS = {
    "label": int,
    "digit": int,
    "num_frames": int,
    "image_size": int,
    "noise_seed": int,
    "noise_std": float,
    "reversed_noise": bool,
}


def _frozen(array: Any, ndim: int) -> np.ndarray:
    """A read-only float view of `array` (never a flag change on the caller's array)."""
    view = np.asarray(array).view()
    if view.ndim != ndim or not np.issubdtype(view.dtype, np.floating):
        raise ValueError(f"expected a {ndim}-D float array, got {view.dtype} {view.shape}")
    view.flags.writeable = False
    return view


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and np.array_equal(a, b)
        )
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def reverse_spec(spec: ClipSpec) -> ClipSpec:
    """The clip played backwards: start and end swapped, noise in reversed order, the opposite label."""
    return dataclasses.replace(
        spec,
        start=spec.end,
        end=spec.start,
        reversed_noise=not spec.reversed_noise,
        label=OPPOSITE[spec.label],
    )


def actor_states(spec: ClipSpec) -> np.ndarray:
    """(T, 5) float64 per-frame actor states (x, y, angle, scale, alpha), exactly symmetric in time."""
    last = spec.num_frames - 1
    late = np.arange(spec.num_frames, dtype=np.float64)[:, None]  # t
    early = last - late  # T - 1 - t
    return (spec.start.as_array()[None] * early + spec.end.as_array()[None] * late) / last


def render_clip(spec: ClipSpec) -> np.ndarray:
    """uint8 (T, H, W) frames of `spec` (see the module doc for the compositing)."""
    size, frames = spec.image_size, spec.num_frames
    canvas = spec.background.astype(np.float64)  # (H, W)
    for glyph, state in zip(spec.distractor_glyphs, spec.distractor_states, strict=True):
        ink = _warp(glyph, state.as_array()[None], size)[0] * state.alpha  # (H, W)
        canvas = canvas + ink * (1.0 - canvas)
    states = actor_states(spec)  # (T, 5)
    ink = _warp(spec.glyph, states, size) * states[:, 4, None, None]  # (T, H, W)
    video = canvas[None] + ink * (1.0 - canvas[None])
    if spec.noise_std > 0:
        noise = np.random.default_rng(spec.noise_seed).normal(0.0, spec.noise_std, (frames, size, size))
        video = video + (noise[::-1] if spec.reversed_noise else noise)
    return np.rint(np.clip(video, 0.0, 1.0) * 255.0).astype(np.uint8)


def _warp(glyph: np.ndarray, states: np.ndarray, size: int) -> np.ndarray:
    """(T, size, size) bilinear samples of `glyph` (G, G) placed at each of `states` (T, 5).

    Each frame depends on its own state only, with scalar trigonometry, so frames are bit-identical
    wherever they sit in the batch (which exact time reversal relies on).
    """
    radians = [math.radians(a) for a in states[:, 2].tolist()]
    step = UPSAMPLE / states[:, 3]  # glyph px per canvas px, (T,)
    cos = (np.array([math.cos(r) for r in radians]) * step)[:, None, None]
    sin = (np.array([math.sin(r) for r in radians]) * step)[:, None, None]
    dy = np.arange(size, dtype=np.float64)[None, :, None] - states[:, 1, None, None]  # (T, H, 1)
    dx = np.arange(size, dtype=np.float64)[None, None, :] - states[:, 0, None, None]  # (T, 1, W)
    middle = (glyph.shape[0] - 1) / 2.0
    # inverse of a counter-clockwise (on screen, y down) rotation: screen offset -> glyph offset
    rows = middle + dx * sin + dy * cos  # (T, H, W)
    cols = middle + dx * cos - dy * sin
    return ndimage.map_coordinates(glyph, [rows, cols], order=1, mode="constant", cval=0.0, prefilter=False)


def upsample_glyphs(images: np.ndarray) -> np.ndarray:
    """(N, 40, 40) float32 smooth glyphs in [0, 1] from (N, 8, 8) digits with values 0..16."""
    images = np.asarray(images, np.float64)
    if images.ndim != 3 or images.shape[1:] != (8, 8):
        raise ValueError(f"expected (N, 8, 8) digit images, got {images.shape}")
    padded = np.pad(images / 16.0, ((0, 0), (GLYPH_PAD, GLYPH_PAD), (GLYPH_PAD, GLYPH_PAD)))  # (N, 10, 10)
    # one image at a time: a glyph never depends on which other glyphs are upsampled with it
    zoomed = [ndimage.zoom(p, UPSAMPLE, order=3, mode="grid-constant", grid_mode=True) for p in padded]
    return np.clip(np.stack(zoomed) if zoomed else np.zeros((0, GLYPH_SIZE, GLYPH_SIZE)), 0.0, 1.0).astype(
        np.float32
    )  # (N, 40, 40)


def glyph_pools(seed: int = 0) -> dict[str, np.ndarray]:
    """Sorted source indices (into ``load_digits()``) of each split's disjoint glyph pool.

    Every digit class is shuffled by a Generator seeded by `seed` and cut 70/10/20 % into train,
    validation and test.
    """
    targets = load_digits().target
    rng = np.random.default_rng(seed)
    pools: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
    for digit in range(10):
        members = rng.permutation(np.flatnonzero(targets == digit))
        cuts = np.rint(np.cumsum(POOL_FRACTIONS)[:-1] * len(members)).astype(int)
        for split, part in zip(SPLITS, np.split(members, cuts), strict=True):
            pools[split].append(part)
    return {split: np.sort(np.concatenate(parts)) for split, parts in pools.items()}


def split_glyphs(split: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The upsampled glyphs (N, 40, 40) and digit classes (N,) of one split's pool."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} must be one of {SPLITS}")
    source = load_digits()
    rows = glyph_pools(seed)[split]
    return upsample_glyphs(source.images[rows]), source.target[rows].astype(np.int64)


def sample_spec(
    rng: np.random.Generator,
    *,
    label: int,
    glyphs: np.ndarray,
    digits: np.ndarray | None = None,
    num_frames: int = 8,
    image_size: int = 32,
    max_distractors: int = 2,
    noise_std: tuple[float, float] = NOISE_STD,
    background_level: tuple[float, float] = BACKGROUND_LEVEL,
) -> ClipSpec:
    """One random clip of class `label` (see the module doc for the distributions).

    Args:
        glyphs: (N, 40, 40) pool from :func:`upsample_glyphs`; actor and distractors are drawn from it.
        digits: (N,) digit class of each glyph (the spec's ``digit``; -1 when None).
        max_distractors / noise_std / background_level: 0 / (0, 0) / (0, 0) give a clean clip of the
            actor alone on black.

    An odd (backward) label is sampled as its even partner and reversed with :func:`reverse_spec`.
    """
    if not 0 <= label < len(CLASS_NAMES):
        raise ValueError(f"label={label} must be in [0, {len(CLASS_NAMES)})")
    glyphs = np.asarray(glyphs)
    if glyphs.ndim != 3 or glyphs.shape[1:] != (GLYPH_SIZE, GLYPH_SIZE) or len(glyphs) == 0:
        raise ValueError(f"glyphs must be a non-empty upsample_glyphs() pool (N, 40, 40), got {glyphs.shape}")
    if digits is not None and len(digits) != len(glyphs):
        raise ValueError(f"{len(digits)} digits for {len(glyphs)} glyphs")
    if max_distractors < 0:
        raise ValueError(f"max_distractors={max_distractors} must be >= 0")
    if label % 2:
        forward = sample_spec(
            rng,
            label=OPPOSITE[label],
            glyphs=glyphs,
            digits=digits,
            num_frames=num_frames,
            image_size=image_size,
            max_distractors=max_distractors,
            noise_std=noise_std,
            background_level=background_level,
        )
        return reverse_spec(forward)

    k = image_size / REFERENCE_SIZE
    index = int(rng.integers(len(glyphs)))
    tilt = rng.uniform(-TILT, TILT)
    scale = rng.uniform(*SCALE) * k
    alpha = rng.uniform(*ALPHA)
    name = CLASS_NAMES[label]
    start = {"angle": tilt, "scale": scale, "alpha": alpha}
    end = dict(start)
    shift = np.zeros(2)  # end centre - start centre, (x, y)
    if name == "move_left":
        shift[0] = -rng.uniform(*MOVE_DISTANCE) * k
    elif name == "move_up":
        shift[1] = -rng.uniform(*MOVE_DISTANCE) * k
    elif name == "rotate_cw":  # clockwise on screen: the counter-clockwise angle decreases
        turn = rng.uniform(*TURN)
        start["angle"], end["angle"] = tilt + turn / 2, tilt - turn / 2
    elif name == "zoom_in":
        start["scale"] = rng.uniform(*ZOOM_START_SCALE) * k
        end["scale"] = start["scale"] * rng.uniform(*ZOOM_FACTOR)
    elif name == "fade_in":
        start["alpha"], end["alpha"] = rng.uniform(*FADE_START), 1.0
    margin = MARGIN * max(start["scale"], end["scale"])
    centre = np.array([_path_start(rng, image_size, margin, float(s)) for s in shift])  # (x, y)
    begin = ActorState(float(centre[0]), float(centre[1]), **start)
    finish = ActorState(float(centre[0] + shift[0]), float(centre[1] + shift[1]), **end)

    count = int(rng.integers(0, max_distractors + 1))
    distractor_glyphs, distractor_states = [], []
    taken: list[np.ndarray] = []
    for _ in range(count):
        d_scale = rng.uniform(*DISTRACTOR_SCALE) * k
        d_angle, d_alpha = rng.uniform(-TILT, TILT), rng.uniform(*DISTRACTOR_ALPHA)
        low, high = _inside(image_size, MARGIN * d_scale)
        candidates = rng.uniform(low, high, (PLACEMENT_CANDIDATES, 2))  # (C, 2) (x, y)
        distance = _segment_distance(candidates, centre, centre + shift)
        for point in taken:
            distance = np.minimum(distance, np.linalg.norm(candidates - point, axis=1))
        best = candidates[int(np.argmax(distance))]
        taken.append(best)
        distractor_glyphs.append(glyphs[int(rng.integers(len(glyphs)))])
        distractor_states.append(ActorState(float(best[0]), float(best[1]), d_angle, d_scale, d_alpha))

    level = rng.uniform(*background_level)
    field = ndimage.gaussian_filter(rng.standard_normal((image_size, image_size)), BACKGROUND_SIGMA * k)
    spread = field.max() - field.min()
    background = level * (field - field.min()) / spread if spread > 0 else np.zeros_like(field)
    return ClipSpec(
        label=label,
        digit=int(digits[index]) if digits is not None else -1,
        num_frames=num_frames,
        image_size=image_size,
        glyph=glyphs[index],
        start=begin,
        end=finish,
        background=background.astype(np.float32),
        distractor_glyphs=tuple(distractor_glyphs),
        distractor_states=tuple(distractor_states),
        noise_seed=int(rng.integers(2**63)),
        noise_std=float(rng.uniform(*noise_std)),
    )


def _inside(size: int, margin: float) -> tuple[float, float]:
    """The range of centres at least `margin` px from the canvas borders (the middle if none)."""
    low, high = margin, size - 1 - margin
    return (low, high) if low <= high else ((size - 1) / 2, (size - 1) / 2)


def _path_start(rng: np.random.Generator, size: int, margin: float, shift: float) -> float:
    """A start coordinate with the path [start, start + shift] inside the margin (centred if it cannot be)."""
    low, high = margin - min(shift, 0.0), size - 1 - margin - max(shift, 0.0)
    if low > high:
        return (size - 1 - shift) / 2
    return rng.uniform(low, high)


def _segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(C,) distance of each of `points` (C, 2) to the segment from `a` to `b`."""
    direction = b - a
    length = float(direction @ direction)
    u = np.clip((points - a) @ direction / length, 0.0, 1.0) if length > 0 else np.zeros(len(points))
    return np.linalg.norm(points - (a + u[:, None] * direction), axis=1)


def split_labels(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size,) balanced labels: i % 10, shuffled."""
    return rng.permutation(np.arange(size) % len(CLASS_NAMES))


def clip_specs(
    split: str,
    size: int,
    *,
    num_frames: int = 8,
    image_size: int = 32,
    seed: int = 0,
    pool: tuple[np.ndarray, np.ndarray] | None = None,
) -> Iterator[ClipSpec]:
    """The specs of clips 0..size-1 of `split`, exactly as :func:`build_moving_digits` renders them.

    `pool` is ``split_glyphs(split, seed)`` (computed when None).
    """
    glyphs, digits = pool if pool is not None else split_glyphs(split, seed)
    rng = np.random.default_rng([seed, zlib.crc32(split.encode())])
    for label in split_labels(rng, size).tolist():
        yield sample_spec(
            rng, label=label, glyphs=glyphs, digits=digits, num_frames=num_frames, image_size=image_size
        )


def build_moving_digits(
    directory: str | Path,
    *,
    train_size: int = 6000,
    validation_size: int = 500,
    test_size: int = 1000,
    num_frames: int = 8,
    image_size: int = 32,
    seed: int = 0,
    fps: int = 8,
    crf: int = 12,
) -> DatasetDict:
    """Render and encode the moving-digits clips under `directory` (see the module doc).

    Returns train/validation/test splits whose ``video`` column is relative to `directory`.
    """
    sizes = {"train": train_size, "validation": validation_size, "test": test_size}
    for split, size in sizes.items():
        if size < 1:
            raise ValueError(f"{split}_size={size} must be >= 1")
    if num_frames < 2:
        raise ValueError(f"num_frames={num_frames} must be >= 2")
    if image_size < 8 or image_size % 2:
        raise ValueError(f"image_size={image_size} must be even and >= 8 (H.264 in yuv420p)")
    directory = Path(directory)
    source = load_digits()
    images = upsample_glyphs(source.images)  # (1797, 40, 40), once for every split
    targets = source.target.astype(np.int64)
    pools = glyph_pools(seed)
    splits = {}
    for split, size in sizes.items():
        folder = directory / "videos" / split
        folder.mkdir(parents=True, exist_ok=True)
        pool = (images[pools[split]], targets[pools[split]])
        columns: dict[str, list[Any]] = {"video": [], "label": [], "digit": [], "id": []}
        specs = clip_specs(split, size, num_frames=num_frames, image_size=image_size, seed=seed, pool=pool)
        for i, spec in enumerate(specs):
            relative = f"videos/{split}/{i:06d}.mp4"
            write_video(directory / relative, render_clip(spec), fps=fps, crf=crf)
            columns["video"].append(relative)
            columns["label"].append(spec.label)
            columns["digit"].append(spec.digit)
            columns["id"].append(f"{split}-{i:06d}")
        splits[split] = Dataset.from_dict(columns, features=FEATURES)
    return DatasetDict(splits)
