"""Audio files in through `soundfile` (libsndfile, shipped in its wheel): no system FFmpeg, no torchcodec.

`read_audio` serves every audio source the same way: a file path (absolute or relative to a root
directory), the ``{bytes, path}`` struct a hub ``Audio`` column holds when cast with ``decode=False``,
or an already decoded ``{array, sampling_rate}``. It returns mono float32 samples in [-1, 1] at the
requested rate, resampled with torchaudio's windowed-sinc resampler when the file's rate differs.

Why not `datasets`' own decoding: datasets >= 4 decodes ``Audio`` through torchcodec, whose wheel needs
FFmpeg's shared libraries and NVIDIA NPP even on a CPU machine; libsndfile reads WAV, FLAC, OGG/Vorbis
and MP3 (LibriSpeech is FLAC, Common Voice MP3) from one pip wheel.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch
import torchaudio.functional as AF

AudioSource = str | Path | dict[str, Any]


class AudioReadError(ValueError):
    """Audio that cannot be decoded (missing, truncated, not audio, empty); names the file."""


def read_audio(source: AudioSource, *, sample_rate: int = 16_000, root: str | Path | None = None) -> np.ndarray:
    """Decode one recording to (S,) float32 mono samples at `sample_rate`.

    Args:
        source: a path (relative paths resolve against `root`), ``{"bytes": ..., "path": ...}`` (a hub
            Audio column read with ``decode=False``; bytes win when present) or ``{"array", "sampling_rate"}``.
        sample_rate: the rate returned; other rates are resampled (e.g. 22.05 kHz or 8 kHz -> 16 kHz).
        root: directory of relative paths.

    Multi-channel audio is averaged to mono. Raises `AudioReadError` naming the file for missing,
    unreadable or empty audio.
    """
    name = _display_name(source)
    if isinstance(source, dict) and source.get("array") is not None:
        samples, rate = np.asarray(source["array"], dtype=np.float32), int(source["sampling_rate"])
    else:
        samples, rate = _decode(source, root=root, name=name)
    if samples.ndim == 2:  # (S, C) -> (S,)
        samples = samples.mean(axis=1)
    if samples.size == 0:
        raise AudioReadError(f"audio {name} holds no samples (an empty recording)")
    if not np.isfinite(samples).all():
        raise AudioReadError(f"audio {name} holds NaN or infinite samples")
    if rate != sample_rate:
        samples = resample(samples, rate, sample_rate)
    return np.ascontiguousarray(samples, dtype=np.float32)


def resample(samples: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """(S,) float samples from `orig_rate` to `new_rate` (torchaudio's Hann-windowed sinc interpolation)."""
    if orig_rate == new_rate:
        return samples
    waveform = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    return AF.resample(waveform, orig_rate, new_rate).numpy()


def audio_info(source: AudioSource, *, root: str | Path | None = None) -> tuple[int, int]:
    """(frames, sample rate) of a recording from its header alone (decodes only in-memory arrays)."""
    name = _display_name(source)
    if isinstance(source, dict) and source.get("array") is not None:
        return len(source["array"]), int(source["sampling_rate"])
    try:
        info = soundfile.info(_file_like(source, root=root, name=name))
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioReadError(f"cannot read the header of audio {name}: {err}") from None
    return int(info.frames), int(info.samplerate)


def write_audio(path: str | Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write (S,) float samples in [-1, 1] as a file whose format follows the suffix (.wav as 16-bit PCM, .flac)."""
    path = Path(path)
    subtype = "PCM_16" if path.suffix.lower() in (".wav", ".flac") else None
    soundfile.write(str(path), np.asarray(samples, dtype=np.float32), sample_rate, subtype=subtype)


def _decode(source: AudioSource, *, root: str | Path | None, name: str) -> tuple[np.ndarray, int]:
    try:
        samples, rate = soundfile.read(_file_like(source, root=root, name=name), dtype="float32", always_2d=False)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioReadError(f"cannot decode audio {name}: {err}") from None
    return samples, int(rate)


def _file_like(source: AudioSource, *, root: str | Path | None, name: str) -> str | io.BytesIO:
    if isinstance(source, dict):
        if source.get("bytes"):
            return io.BytesIO(source["bytes"])
        if not source.get("path"):
            raise AudioReadError(f"audio {name} has neither bytes nor a path")
        source = source["path"]
    path = Path(source)
    if not path.is_absolute() and root is not None:
        path = Path(root) / path
    if not path.is_file():
        raise AudioReadError(f"audio file {path} does not exist")
    return str(path)


def _display_name(source: AudioSource) -> str:
    if isinstance(source, dict):
        return str(source.get("path") or "<in-memory audio>")
    return str(source)
