"""The espeak-ng speech builder: schema and WAV files, text normalisation, speaker splits, audio checks.

The audio is checked from the files and samples, not from the builder's bookkeeping: WAV headers are
read with the standard library's ``wave``; durations must grow with the number of words spoken; the
16 kHz audio must have the 320/441 length of espeak-ng's 22,050 Hz output and about its loudness; the
added noise must have the drawn SNR; every speaker (voice, variant) must sound different (espeak-ng
silently ignores a variant it cannot apply). Tests that synthesize are skipped without espeak-ng.
"""

from __future__ import annotations

import itertools
import math
import re
import shutil
import wave
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from datasets import Features, Value
from scipy.stats import spearmanr
from tasks.asr import builder
from tasks.asr.builder import (
    DIGIT_WORDS,
    FEATURES,
    SAMPLE_RATE,
    SPEAKERS,
    SPLITS,
    VARIANTS,
    VOICES,
    EspeakNotFoundError,
    UtteranceSpec,
    build_speech,
    count_sentences,
    normalize_text,
    render_utterance,
    sentence_vocabulary,
    speaker_name,
    speaker_splits,
    synthesize,
    utterance_specs,
)

SIZES = {"train": 12, "validation": 4, "test": 4}
WORDS = re.compile(r"[a-z]+( [a-z]+)*")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, object]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    directory = tmp_path_factory.mktemp("speech")
    return directory, build_speech(directory, train_size=12, validation_size=4, test_size=4, seed=0)


@pytest.fixture(scope="module")
def many_specs() -> list[UtteranceSpec]:
    """2,000 training specs (nothing synthesized) for distribution checks."""
    return list(utterance_specs("train", 2000, seed=3))


def clean(spec: UtteranceSpec) -> UtteranceSpec:
    return UtteranceSpec(spec.text, spec.utterance_type, spec.speaker_id, spec.rate, spec.pitch, None, 0)


# ---------------------------------------------------------------- dataset and files


@needs_espeak
def test_schema_paths_and_ids(built):
    directory, dataset = built
    assert list(dataset) == list(SPLITS)
    assert dataset["train"].features == FEATURES
    assert FEATURES == Features(
        {
            "audio": Value("string"),
            "text": Value("string"),
            "speaker_id": Value("int64"),
            "id": Value("string"),
            "utterance_type": Value("string"),
            "voice": Value("string"),
            "duration": Value("float64"),
        }
    )
    for split, size in SIZES.items():
        rows = dataset[split]
        assert len(rows) == size
        assert rows["id"] == [f"{split}-{i:06d}" for i in range(size)]
        assert rows["audio"] == [f"audio/{split}/{i:06d}.wav" for i in range(size)]
        assert all((directory / path).is_file() for path in rows["audio"])
        assert all(not Path(path).is_absolute() for path in rows["audio"])
        assert Counter(rows["utterance_type"]) == {"digits": size // 2, "sentence": size // 2}
        assert rows["voice"] == [speaker_name(s) for s in rows["speaker_id"]]


@needs_espeak
def test_wav_files_are_16khz_int16_mono(built):
    directory, dataset = built
    for split in SPLITS:
        for row in dataset[split]:
            with wave.open(str(directory / row["audio"]), "rb") as file:
                assert file.getframerate() == SAMPLE_RATE
                assert file.getsampwidth() == 2
                assert file.getnchannels() == 1
                assert file.getcomptype() == "NONE"
                frames = file.getnframes()
                samples = np.frombuffer(file.readframes(frames), "<i2")
            assert frames / SAMPLE_RATE == pytest.approx(row["duration"])
            assert 0.5 < row["duration"] < 8.0
            assert np.abs(samples).max() > 3000  # speech, not silence


@needs_espeak
def test_duration_grows_with_text_length(built):
    lengths = [1, 3, 5, 7]
    durations = []
    for n in lengths:
        raw, rate = synthesize(" ".join(DIGIT_WORDS[1 : n + 1]), speaker_id=40, rate=160, pitch=50)
        durations.append(len(raw) / rate)
    assert all(b > a + 0.3 for a, b in itertools.pairwise(durations)), durations
    _, dataset = built
    rows = [row for split in SPLITS for row in dataset[split]]
    rho = spearmanr([len(row["text"]) for row in rows], [row["duration"] for row in rows]).statistic
    assert rho > 0.6


@needs_espeak
def test_built_rows_follow_the_specs(built):
    _, dataset = built
    for split, size in SIZES.items():
        specs = list(utterance_specs(split, size, seed=0))
        assert dataset[split]["text"] == [s.text for s in specs]
        assert dataset[split]["speaker_id"] == [s.speaker_id for s in specs]
        assert dataset[split]["utterance_type"] == [s.utterance_type for s in specs]


# ---------------------------------------------------------------- speakers


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_speaker_splits_are_disjoint_and_cover_every_accent(seed):
    splits = speaker_splits(seed)
    sets = {split: set(ids.tolist()) for split, ids in splits.items()}
    assert not sets["train"] & sets["validation"]
    assert not sets["train"] & sets["test"]
    assert not sets["validation"] & sets["test"]
    assert set().union(*sets.values()) == set(range(len(SPEAKERS)))
    assert {split: len(ids) for split, ids in sets.items()} == {"train": 176, "validation": 32, "test": 48}
    for ids in sets.values():
        assert {SPEAKERS[i][0] for i in ids} == set(VOICES)
    pairs = {split: {SPEAKERS[i] for i in ids} for split, ids in sets.items()}
    assert not pairs["train"] & (pairs["validation"] | pairs["test"])
    variants = {split: {variant for _, variant in split_pairs} for split, split_pairs in pairs.items()}
    assert {split: len(v) for split, v in variants.items()} == {"train": 22, "validation": 4, "test": 6}
    assert not variants["train"] & (variants["validation"] | variants["test"])
    assert not variants["validation"] & variants["test"]
    assert speaker_splits(seed)["test"].tolist() == splits["test"].tolist()


def test_speaker_ids_and_names():
    assert len(SPEAKERS) == len(set(SPEAKERS)) == len(VOICES) * len(VARIANTS) == 256
    assert speaker_name(0) == "en-gb+m1"
    assert speaker_name(len(VARIANTS) + 2) == "en-us+m3"
    assert speaker_splits(0)["test"].tolist() != speaker_splits(1)["test"].tolist()


@needs_espeak
def test_built_speakers_stay_in_their_split(built):
    _, dataset = built
    splits = speaker_splits(0)
    for split in SPLITS:
        assert set(dataset[split]["speaker_id"]) <= set(splits[split].tolist())
    voices = {split: set(dataset[split]["voice"]) for split in SPLITS}
    assert not voices["train"] & voices["test"]
    assert not voices["train"] & voices["validation"]
    assert not voices["validation"] & voices["test"]


@needs_espeak
def test_every_speaker_sounds_different():
    """espeak-ng applies every (voice, variant): no two speakers give the same samples (the en-gb quirk).

    The text has vowels that en-us-nyc says differently from en-us (not so "seven", the same in both).
    """
    audio = {
        synthesize("call mom at work", speaker_id=i, rate=170)[0].tobytes() for i in range(len(SPEAKERS))
    }
    assert len(audio) == len(SPEAKERS)
    seven = {synthesize("seven", speaker_id=SPEAKERS.index((voice, "m3")))[0].tobytes() for voice in VOICES}
    assert len(seven) == len(VOICES) - 1  # en-us-nyc+m3 == en-us+m3 here: hence whole variants are held out


# ---------------------------------------------------------------- texts and determinism


def test_specs_are_deterministic():
    first = list(utterance_specs("validation", 50, seed=4))
    assert first == list(utterance_specs("validation", 50, seed=4))
    assert first != list(utterance_specs("validation", 50, seed=5))
    assert first != list(utterance_specs("test", 50, seed=4))
    noisy, quiet = (list(utterance_specs("train", 30, seed=4, noise_snr_db=snr)) for snr in ((20, 40), None))
    assert [clean(s) for s in noisy] == [clean(s) for s in quiet]  # the noise setting changes nothing else
    assert all(s.snr_db is None for s in quiet)


def test_normalize_text():
    assert normalize_text("Turn ON the Kitchen-Lights, please!") == "turn on the kitchen lights please"
    assert normalize_text("  call  mom\tat work. ") == "call mom at work"
    assert normalize_text("it's 7 o'clock") == "it s o clock"


def test_texts_are_normalized_and_from_their_vocabulary(many_specs):
    vocabulary = sentence_vocabulary()
    lengths = Counter()
    zeros = Counter()
    for spec in many_specs:
        assert WORDS.fullmatch(spec.text), spec.text
        assert normalize_text(spec.text) == spec.text
        words = spec.text.split()
        if spec.utterance_type == "digits":
            assert 1 <= len(words) <= 7
            assert set(words) <= set(DIGIT_WORDS)
            lengths[len(words)] += 1
            zeros.update(w for w in words if w in ("oh", "zero"))
        else:
            assert spec.utterance_type == "sentence"
            assert set(words) <= vocabulary
    assert set(lengths) == set(range(1, 8))
    assert zeros["oh"] > 50 and zeros["zero"] > 50
    assert Counter(s.utterance_type for s in many_specs) == {"digits": 1000, "sentence": 1000}


def test_grammar_is_large_enough(many_specs):
    vocabulary = sentence_vocabulary()
    assert 200 <= len(vocabulary) <= 600
    assert all(WORDS.fullmatch(word) for word in vocabulary)
    assert count_sentences() >= 10_000
    sentences = [s.text for s in many_specs if s.utterance_type == "sentence"]
    assert len(set(sentences)) > 0.6 * len(sentences)  # short templates ("tell me a {story}") recur


def test_prosody_ranges(many_specs):
    assert min(s.rate for s in many_specs) >= 130 and max(s.rate for s in many_specs) <= 200
    assert min(s.pitch for s in many_specs) >= 30 and max(s.pitch for s in many_specs) <= 70
    assert all(20.0 <= s.snr_db <= 40.0 for s in many_specs)


# ---------------------------------------------------------------- espeak-ng missing, bad arguments


def test_missing_espeak_names_the_package_and_command(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no espeak-ng
    with pytest.raises(EspeakNotFoundError) as error:
        build_speech(tmp_path / "out", train_size=2, validation_size=1, test_size=1)
    assert "espeak-ng" in str(error.value)
    assert "apt-get install espeak-ng" in str(error.value)
    assert not (tmp_path / "out").exists()
    monkeypatch.undo()
    monkeypatch.setattr(builder.shutil, "which", lambda name: None)
    with pytest.raises(EspeakNotFoundError, match="apt-get install espeak-ng"):
        synthesize("one", speaker_id=0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"train_size": 0},
        {"digit_fraction": 1.5},
        {"rate": (200, 130)},
        {"pitch": (30, 120)},
        {"noise_snr_db": (40, 20)},
    ],
)
def test_bad_arguments(kwargs, tmp_path):
    with pytest.raises(ValueError):
        build_speech(tmp_path, **{"train_size": 2, "validation_size": 1, "test_size": 1, **kwargs})


# ---------------------------------------------------------------- audio processing


@needs_espeak
def test_resampling_keeps_length_ratio_and_loudness():
    spec = UtteranceSpec("turn on the kitchen lights", "sentence", 37, 150, 50, None, 0)
    raw, raw_rate = synthesize(spec.text, speaker_id=spec.speaker_id, rate=spec.rate, pitch=spec.pitch)
    assert raw_rate == 22_050 and raw.dtype == np.int16
    audio = render_utterance(spec)
    assert audio.dtype == np.int16
    assert abs(len(audio) - len(raw) * SAMPLE_RATE / raw_rate) <= 2
    assert len(audio) == math.ceil(len(raw) * 320 / 441)
    rms = [math.sqrt(np.mean(x.astype(np.float64) ** 2)) for x in (raw, audio)]
    assert rms[1] == pytest.approx(rms[0], rel=0.1)
    assert np.array_equal(audio, render_utterance(spec))  # espeak-ng and the resampler are deterministic


@needs_espeak
def test_noise_has_the_drawn_snr():
    spec = next(s for s in utterance_specs("test", 10, seed=0) if s.utterance_type == "sentence")
    noisy = render_utterance(spec).astype(np.float64)
    reference = render_utterance(clean(spec)).astype(np.float64)
    snr = 10 * np.log10(np.mean(reference**2) / np.mean((noisy - reference) ** 2))
    assert snr == pytest.approx(spec.snr_db, abs=0.3)
    assert np.array_equal(noisy, render_utterance(spec).astype(np.float64))
