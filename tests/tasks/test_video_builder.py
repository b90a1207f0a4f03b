"""The moving-digits video builder: schema, exact time reversal, class semantics read from the pixels, files.

The class semantics are checked on rendered frames, not on the specs: an intensity-weighted centroid for
the moves, the orientation of the principal axis (second-order moments) for the turns, the area above
half the frame's peak for the zooms and the total intensity for the fades. The checks are exclusive:
every clean clip passes its own class's check and fails the nine others, so a move_right clip is shown
to fail the move_left check (and so on for every pair). The rotation helper's sign convention is pinned
on hand-drawn frames, independently of the builder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Features, Value
from sklearn.datasets import load_digits
from tasks.video import builder
from tasks.video.builder import (
    CLASS_NAMES,
    FEATURES,
    GLYPH_SIZE,
    OPPOSITE,
    ActorState,
    ClipSpec,
    build_moving_digits,
    clip_specs,
    glyph_pools,
    render_clip,
    reverse_spec,
    sample_spec,
    split_glyphs,
    upsample_glyphs,
)

from attnlab.data.video import read_video

SIZES = {"train": 20, "validation": 10, "test": 10}
CLEAN = {"max_distractors": 0, "noise_std": (0.0, 0.0), "background_level": (0.0, 0.0)}
MAX_MEAN_CODEC_ERROR = 4.0  # grey levels


@pytest.fixture(scope="module")
def train_pool() -> tuple[np.ndarray, np.ndarray]:
    return split_glyphs("train", 0)


@pytest.fixture(scope="module")
def bar() -> np.ndarray:
    """A clearly elongated glyph (a vertical bar), upsampled like the digits: (1, 40, 40)."""
    image = np.zeros((1, 8, 8))
    image[0, 1:7, 3:5] = 16
    return upsample_glyphs(image)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, object]:
    directory = tmp_path_factory.mktemp("moving_digits")
    return directory, build_moving_digits(directory, train_size=20, validation_size=10, test_size=10, seed=0)


# ---------------------------------------------------------------- pixel measurements (independent of the builder)


def centroids(frames: np.ndarray) -> np.ndarray:
    """(T, 2) intensity-weighted centre (x, y) of each frame, image coordinates (y down)."""
    weights = frames.astype(np.float64)
    total = weights.sum(axis=(1, 2))
    height, width = frames.shape[1:]
    x = (weights * np.arange(width)[None, None, :]).sum(axis=(1, 2)) / total
    y = (weights * np.arange(height)[None, :, None]).sum(axis=(1, 2)) / total
    return np.stack([x, y], axis=1)


def axis_angles(frames: np.ndarray) -> np.ndarray:
    """(T,) orientation of each frame's principal axis in degrees, mathematical convention (y UP,
    counter-clockwise positive), defined modulo 180."""
    weights = frames.astype(np.float64)
    centre = centroids(frames)
    height, width = frames.shape[1:]
    rows, cols = np.mgrid[:height, :width]
    dx = cols[None] - centre[:, 0, None, None]
    up = -(rows[None] - centre[:, 1, None, None])  # y up
    m20, m02, m11 = ((weights * a * b).sum(axis=(1, 2)) for a, b in ((dx, dx), (up, up), (dx, up)))
    return 0.5 * np.degrees(np.arctan2(2 * m11, m20 - m02))


def clockwise_turn(frames: np.ndarray) -> float:
    """Total clockwise turn on screen (degrees) of the principal axis, summed over consecutive frames."""
    steps = np.diff(axis_angles(frames))
    steps = (steps + 90.0) % 180.0 - 90.0  # the axis is defined modulo 180: take the small turn
    return float(-steps.sum())  # counter-clockwise (y up) is positive: clockwise is its negative


def bright_area(frames: np.ndarray) -> np.ndarray:
    """(T,) pixels above half the frame's own peak (insensitive to a global fade)."""
    peak = frames.max(axis=(1, 2), keepdims=True).astype(np.float64)
    return (frames > 0.5 * peak).sum(axis=(1, 2))


def moves(axis: int, sign: int) -> Callable[[np.ndarray], bool]:
    def check(frames: np.ndarray) -> bool:
        centre = centroids(frames)
        along, across = centre[:, axis], centre[:, 1 - axis]
        return bool(
            sign * (along[-1] - along[0]) >= 6.0
            and np.all(sign * np.diff(along) > 0)
            and np.ptp(across) < 1.5
        )

    return check


def turns(sign: int) -> Callable[[np.ndarray], bool]:
    return lambda frames: sign * clockwise_turn(frames) >= 30.0


def zooms(sign: int) -> Callable[[np.ndarray], bool]:
    def check(frames: np.ndarray) -> bool:
        area = bright_area(frames)
        return bool((area[-1] / area[0]) ** sign >= 1.6)

    return check


def fades(sign: int) -> Callable[[np.ndarray], bool]:
    def check(frames: np.ndarray) -> bool:
        total = frames.astype(np.float64).sum(axis=(1, 2))
        area = bright_area(frames)
        return bool((total[-1] / total[0]) ** sign >= 2.0 and 0.75 <= area[-1] / area[0] <= 1.33)

    return check


CHECKS = {
    "move_left": moves(0, -1),
    "move_right": moves(0, +1),
    "move_up": moves(1, -1),  # y down: up is decreasing y
    "move_down": moves(1, +1),
    "rotate_cw": turns(+1),
    "rotate_ccw": turns(-1),
    "zoom_in": zooms(+1),
    "zoom_out": zooms(-1),
    "fade_in": fades(+1),
    "fade_out": fades(-1),
}


def test_clockwise_turn_convention_on_hand_drawn_frames():
    """A vertical bar whose top swings right (to "/") turns clockwise on screen."""
    size = 21
    vertical = np.zeros((size, size))
    vertical[2:-2, size // 2] = 1.0
    slash = np.zeros((size, size))
    for r in range(2, size - 2):
        slash[r, size - 1 - r] = 1.0  # top row at the right: "/"
    backslash = slash[:, ::-1]  # top at the left: "\"
    assert clockwise_turn(np.stack([vertical, slash])) == pytest.approx(45.0, abs=1.0)
    assert clockwise_turn(np.stack([vertical, backslash])) == pytest.approx(-45.0, abs=1.0)
    horizontal = vertical.T
    assert clockwise_turn(np.stack([vertical, slash, horizontal])) == pytest.approx(90.0, abs=1.0)
    assert clockwise_turn(np.stack([horizontal, slash, vertical])) == pytest.approx(-90.0, abs=1.0)


# ---------------------------------------------------------------- constants, schema, files


def test_constants():
    assert CLASS_NAMES == [
        "move_left", "move_right", "move_up", "move_down", "rotate_cw",
        "rotate_ccw", "zoom_in", "zoom_out", "fade_in", "fade_out",
    ]  # fmt: skip
    assert OPPOSITE == {0: 1, 1: 0, 2: 3, 3: 2, 4: 5, 5: 4, 6: 7, 7: 6, 8: 9, 9: 8}
    assert FEATURES == Features(
        {
            "video": Value("string"),
            "label": ClassLabel(names=CLASS_NAMES),
            "digit": Value("int64"),
            "id": Value("string"),
        }
    )


def test_schema_ids_paths_and_balance(built):
    directory, dataset = built
    assert list(dataset) == ["train", "validation", "test"]
    assert {split: len(dataset[split]) for split in dataset} == SIZES
    for split in dataset:
        rows = dataset[split]
        assert rows.features == FEATURES
        assert rows["id"] == [f"{split}-{i:06d}" for i in range(SIZES[split])]
        assert rows["video"] == [f"videos/{split}/{i:06d}.mp4" for i in range(SIZES[split])]
        assert all(not Path(path).is_absolute() and (directory / path).is_file() for path in rows["video"])
        counts = np.bincount(rows["label"], minlength=10)
        assert counts.max() - counts.min() == 0 and counts.sum() == SIZES[split]  # sizes are multiples of 10
        assert rows["label"] != sorted(rows["label"])  # shuffled
        assert set(rows["digit"]) <= set(range(10))
    assert len(set(dataset["train"]["digit"])) > 3


def test_labels_balanced_for_any_size():
    labels = builder.split_labels(np.random.default_rng(0), 23)
    assert np.bincount(labels, minlength=10).tolist() == [3, 3, 3] + [2] * 7


def test_files_decode_to_the_rendered_frames(built):
    directory, dataset = built
    errors = []
    for split in dataset:
        specs = list(clip_specs(split, SIZES[split], seed=0))
        assert [s.label for s in specs] == dataset[split]["label"]
        assert [s.digit for s in specs] == dataset[split]["digit"]
        for spec, path in zip(specs, dataset[split]["video"], strict=True):
            decoded = read_video(path, root=directory)
            assert decoded.shape == (8, 32, 32) and decoded.dtype == np.uint8
            errors.append(np.abs(decoded.astype(np.int16) - render_clip(spec)).mean())
    assert max(errors) < MAX_MEAN_CODEC_ERROR, max(errors)


def test_long_clips_are_written_whole(tmp_path):
    dataset = build_moving_digits(
        tmp_path, train_size=3, validation_size=1, test_size=1, num_frames=32, seed=2
    )
    specs = list(clip_specs("train", 3, num_frames=32, seed=2))
    for spec, path in zip(specs, dataset["train"]["video"], strict=True):
        decoded = read_video(path, root=tmp_path)
        assert decoded.shape == (32, 32, 32)
        assert np.abs(decoded.astype(np.int16) - render_clip(spec)).mean() < MAX_MEAN_CODEC_ERROR


def test_other_image_sizes(tmp_path):
    dataset = build_moving_digits(tmp_path, train_size=2, validation_size=1, test_size=1, image_size=48)
    assert read_video(dataset["test"][0]["video"], root=tmp_path).shape == (8, 48, 48)


# ---------------------------------------------------------------- time reversal


@pytest.mark.parametrize("num_frames", [2, 3, 8, 32])
def test_reversal_is_exact_for_every_class(train_pool, num_frames):
    glyphs, digits = train_pool
    rng = np.random.default_rng(num_frames)
    for label in range(10):
        for _ in range(6):
            spec = sample_spec(rng, label=label, glyphs=glyphs, digits=digits, num_frames=num_frames)
            frames = render_clip(spec)
            assert frames.shape == (num_frames, 32, 32) and frames.dtype == np.uint8
            backward = reverse_spec(spec)
            assert backward.label == OPPOSITE[label] and backward.digit == spec.digit
            assert np.array_equal(render_clip(backward), frames[::-1])
            assert reverse_spec(backward) == spec
            assert backward != spec
            assert not np.array_equal(frames, frames[::-1])  # the check has power: clips are not palindromes


def test_reversed_noise_is_needed(train_pool):
    """Swapping start and end alone is not a reversal once there is noise: the flag matters."""
    glyphs, _ = train_pool
    rng = np.random.default_rng(0)
    spec = sample_spec(rng, label=8, glyphs=glyphs, noise_std=(0.04, 0.05))
    backward = reverse_spec(spec)
    assert backward.reversed_noise and not spec.reversed_noise
    unflipped = dataclasses.replace(backward, reversed_noise=False)
    assert not np.array_equal(render_clip(unflipped), render_clip(spec)[::-1])


def test_backward_classes_are_reversed_forward_draws(train_pool):
    """An odd label is drawn exactly as the reversal of its even partner (same distribution, reversed)."""
    glyphs, digits = train_pool
    for label in (1, 3, 5, 7, 9):
        for seed in range(5):
            backward = sample_spec(np.random.default_rng(seed), label=label, glyphs=glyphs, digits=digits)
            forward = sample_spec(np.random.default_rng(seed), label=label - 1, glyphs=glyphs, digits=digits)
            assert backward == reverse_spec(forward)


def test_spec_equality_and_read_only_arrays(train_pool):
    glyphs, _ = train_pool
    spec = sample_spec(np.random.default_rng(0), label=0, glyphs=glyphs)
    copy = dataclasses.replace(spec, glyph=spec.glyph.copy(), background=spec.background.copy())
    assert copy == spec
    assert dataclasses.replace(spec, noise_std=spec.noise_std + 0.01) != spec
    changed = spec.background.copy()
    changed[0, 0] += 0.5
    assert dataclasses.replace(spec, background=changed) != spec
    with pytest.raises(ValueError):
        spec.glyph[0, 0] = 1.0
    assert glyphs.flags.writeable  # the caller's pool is left writeable
    numpy_scalars = dataclasses.replace(
        spec, label=np.int64(spec.label), noise_std=np.float32(spec.noise_std)
    )
    assert type(numpy_scalars.label) is int and reverse_spec(reverse_spec(numpy_scalars)) == numpy_scalars
    with pytest.raises(TypeError):
        hash(spec)


# ---------------------------------------------------------------- class semantics from the pixels


def test_every_clean_clip_passes_its_own_check_only(train_pool):
    """Clean clips (actor alone, no noise): exactly the class's own check passes among the ten."""
    glyphs, digits = train_pool
    rng = np.random.default_rng(7)
    for label, name in enumerate(CLASS_NAMES):
        for _ in range(25):
            frames = render_clip(sample_spec(rng, label=label, glyphs=glyphs, digits=digits, **CLEAN))
            passed = [other for other, check in CHECKS.items() if check(frames)]
            assert passed == [name], (name, passed)


def test_a_move_right_clip_fails_the_move_left_check(train_pool):
    glyphs, _ = train_pool
    spec = sample_spec(np.random.default_rng(1), label=0, glyphs=glyphs, **CLEAN)
    frames = render_clip(spec)
    assert CHECKS["move_left"](frames)
    assert not CHECKS["move_left"](frames[::-1])
    assert not CHECKS["move_left"](render_clip(reverse_spec(spec)))
    assert CHECKS["move_right"](render_clip(reverse_spec(spec)))


@pytest.mark.parametrize("num_frames", [4, 8, 16])
def test_rotation_direction_with_an_elongated_glyph(bar, num_frames):
    """rotate_cw turns clockwise on screen by 60..150 degrees, measured from the image moments."""
    rng = np.random.default_rng(num_frames)
    for _ in range(20):
        clockwise = render_clip(sample_spec(rng, label=4, glyphs=bar, num_frames=num_frames, **CLEAN))
        anticlockwise = render_clip(sample_spec(rng, label=5, glyphs=bar, num_frames=num_frames, **CLEAN))
        assert 55.0 <= clockwise_turn(clockwise) <= 155.0
        assert -155.0 <= clockwise_turn(anticlockwise) <= -55.0
        assert CHECKS["rotate_cw"](clockwise) and not CHECKS["rotate_cw"](anticlockwise)


def test_semantics_hold_with_noise_and_clutter(train_pool):
    """With distractors, background and noise the main pixel signals still point the right way."""
    glyphs, _ = train_pool
    rng = np.random.default_rng(3)
    for _ in range(10):
        left = render_clip(sample_spec(rng, label=0, glyphs=glyphs))
        assert centroids(left)[-1, 0] < centroids(left)[0, 0]
        fade = render_clip(sample_spec(rng, label=8, glyphs=glyphs)).astype(np.float64)
        assert fade[-1].sum() > fade[0].sum()


def test_the_actor_stays_mostly_inside(train_pool):
    """Rendered on a canvas padded by 16 px, >= 90 % of the actor's ink lies in the original frame."""
    glyphs, _ = train_pool
    rng = np.random.default_rng(11)
    pad = 16
    for label in range(10):
        for _ in range(10):
            spec = sample_spec(rng, label=label, glyphs=glyphs, **CLEAN)

            def shifted(state: ActorState) -> ActorState:
                return dataclasses.replace(state, x=state.x + pad, y=state.y + pad)

            big = dataclasses.replace(
                spec,
                image_size=32 + 2 * pad,
                background=np.zeros((32 + 2 * pad, 32 + 2 * pad)),
                start=shifted(spec.start),
                end=shifted(spec.end),
            )
            ink = render_clip(big).astype(np.float64)  # (T, 64, 64)
            inside = ink[:, pad:-pad, pad:-pad].sum(axis=(1, 2)) / ink.sum(axis=(1, 2))
            assert inside.min() >= 0.9, (CLASS_NAMES[label], inside.min())
            same = np.abs(ink[:, pad:-pad, pad:-pad] - render_clip(spec)).max()
            assert same <= 1  # the same clip, up to a rounding flip from the shifted coordinates


def test_distractors_and_background_are_static(train_pool):
    glyphs, _ = train_pool
    rng = np.random.default_rng(5)
    for label in range(10):
        spec = sample_spec(rng, label=label, glyphs=glyphs, max_distractors=2, noise_std=(0.0, 0.0))
        hidden = ActorState(0.0, 0.0, 0.0, 1.0, 0.0)  # the actor fully transparent
        frames = render_clip(dataclasses.replace(spec, start=hidden, end=hidden))
        assert (frames == frames[0]).all()


def test_parameter_ranges(train_pool):
    """Each forward class changes only its own parameter, by the documented amounts."""
    glyphs, _ = train_pool
    rng = np.random.default_rng(9)
    names = ("x", "y", "angle", "scale", "alpha")
    own = {0: "x", 2: "y", 4: "angle", 6: "scale", 8: "alpha"}
    amounts: dict[int, list[float]] = {label: [] for label in own}
    counts, stds = [], []
    for _ in range(60):
        for label, field in own.items():
            spec = sample_spec(rng, label=label, glyphs=glyphs)
            start, end = spec.start, spec.end
            assert [n for n in names if getattr(start, n) != getattr(end, n)] == [field]
            assert all(-15.0 <= a <= 15.0 for a in (start.angle, end.angle)) or label == 4
            if label in (0, 2):
                amounts[label].append(getattr(start, field) - getattr(end, field))
            elif label == 4:
                amounts[label].append(start.angle - end.angle)
                assert -15.0 <= (start.angle + end.angle) / 2 <= 15.0
            elif label == 6:
                amounts[label].append(end.scale / start.scale)
            else:
                assert end.alpha == 1.0 and 0.1 <= start.alpha <= 0.3
            counts.append(len(spec.distractor_glyphs))
            stds.append(spec.noise_std)
    for label, (low, high) in {0: (8, 16), 2: (8, 16), 4: (60, 150), 6: (1.5, 2.2)}.items():
        values = np.array(amounts[label])
        assert values.min() >= low and values.max() <= high
        assert values.max() - values.min() > 0.6 * (high - low)  # they vary
    assert set(counts) == {0, 1, 2}
    assert 0.0 <= min(stds) < 0.01 and 0.04 < max(stds) <= 0.05


# ---------------------------------------------------------------- pools, determinism, errors


def test_glyph_pools_are_disjoint_and_stratified():
    pools = glyph_pools(0)
    assert list(pools) == ["train", "validation", "test"]
    together = np.concatenate(list(pools.values()))
    assert len(together) == len(set(together.tolist())) == 1797
    assert [round(len(p) / 1797, 2) for p in pools.values()] == [0.7, 0.1, 0.2]
    targets = load_digits().target
    assert all(set(targets[p].tolist()) == set(range(10)) for p in pools.values())
    assert not np.array_equal(pools["test"], glyph_pools(1)["test"])
    glyphs, digits = split_glyphs("test", 0)
    assert glyphs.shape == (len(pools["test"]), GLYPH_SIZE, GLYPH_SIZE)
    assert np.array_equal(digits, targets[pools["test"]])


def test_each_split_draws_from_its_own_pool(monkeypatch, tmp_path):
    targets = load_digits().target
    by_digit = {
        split: np.flatnonzero(targets == d) for split, d in (("train", 1), ("validation", 4), ("test", 7))
    }
    monkeypatch.setattr(builder, "glyph_pools", lambda seed: by_digit)
    dataset = build_moving_digits(tmp_path, train_size=10, validation_size=5, test_size=5)
    assert {split: set(dataset[split]["digit"]) for split in dataset} == {
        "train": {1},
        "validation": {4},
        "test": {7},
    }
    for spec in clip_specs("test", 5):  # distractors too
        assert all(any(np.array_equal(g, p) for p in split_glyphs("test")[0]) for g in spec.distractor_glyphs)


def test_upsampled_glyphs_are_smooth_and_independent():
    images = load_digits().images[:5]
    glyphs = upsample_glyphs(images)
    assert glyphs.shape == (5, 40, 40) and glyphs.dtype == np.float32
    assert glyphs.min() >= 0.0 and glyphs.max() <= 1.0
    assert np.array_equal(upsample_glyphs(images[2:3])[0], glyphs[2])
    # smooth, not blocks: far more distinct levels than the 17 of the source
    assert len(np.unique(glyphs[0])) > 200
    # the 8x8 source is recovered by 4x4 block means up to interpolation error
    blocks = glyphs[:, 4:-4, 4:-4].reshape(5, 8, 4, 8, 4).mean(axis=(2, 4))
    assert np.abs(blocks - images / 16.0).mean() < 0.08


def test_determinism():
    def rendered(seed: int) -> list[np.ndarray]:
        return [render_clip(spec) for spec in clip_specs("validation", 10, seed=seed)]

    again = rendered(0)
    assert all(np.array_equal(a, b) for a, b in zip(again, rendered(0), strict=True))
    assert list(clip_specs("validation", 10)) == list(clip_specs("validation", 10))
    images, targets = upsample_glyphs(load_digits().images), load_digits().target
    rows = glyph_pools(0)["validation"]
    pooled = clip_specs("validation", 10, pool=(images[rows], targets[rows]))  # as build_moving_digits does
    assert list(pooled) == list(clip_specs("validation", 10))
    assert all(not np.array_equal(a, b) for a, b in zip(again, rendered(1), strict=True))
    test_clips = [render_clip(spec) for spec in clip_specs("test", 10)]
    assert all(not np.array_equal(a, b) for a, b in zip(again, test_clips, strict=True))


def test_same_arguments_give_the_same_files(built, tmp_path):
    """A second build holds the same labels and clips; decoded frames agree within codec error (x264 may
    encode the same frames a few grey levels apart from run to run, see `write_video`)."""
    directory, dataset = built
    other = build_moving_digits(tmp_path, train_size=20, validation_size=10, test_size=10, seed=0)
    for split in dataset:
        assert other[split][:] == dataset[split][:]
        for path in dataset[split]["video"]:
            again, first = read_video(path, root=tmp_path), read_video(path, root=directory)
            assert np.abs(again.astype(np.int16) - first).mean() < MAX_MEAN_CODEC_ERROR


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train_size": 0}, "train_size=0"),
        ({"validation_size": -1}, "validation_size=-1"),
        ({"test_size": 0}, "test_size=0"),
        ({"num_frames": 1}, "num_frames=1"),
        ({"image_size": 31}, "image_size=31"),
        ({"image_size": 6}, "image_size=6"),
    ],
)
def test_argument_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_moving_digits(tmp_path, **kwargs)


def test_sample_spec_errors(train_pool):
    glyphs, digits = train_pool
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="label=10"):
        sample_spec(rng, label=10, glyphs=glyphs)
    with pytest.raises(ValueError, match="upsample_glyphs"):
        sample_spec(rng, label=0, glyphs=load_digits().images[:3])
    with pytest.raises(ValueError, match="digits for"):
        sample_spec(rng, label=0, glyphs=glyphs, digits=digits[:2])
    with pytest.raises(ValueError, match="num_frames=1"):
        sample_spec(rng, label=0, glyphs=glyphs, num_frames=1)
    assert isinstance(sample_spec(rng, label=3, glyphs=glyphs), ClipSpec)
