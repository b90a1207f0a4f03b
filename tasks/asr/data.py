"""DataModule for speech recognition: LibriSpeech-style ``audio`` / ``text`` rows -> 16 kHz waveforms and
CTC character targets, batched by length, with speed and noise augmentation in training."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Audio, Dataset, DatasetDict
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import Sampler

from attnlab.data import HFDataModule, LengthBucketBatchSampler
from attnlab.data.audio import AudioReadError, audio_info, read_audio, resample
from tasks.asr.builder import build_speech
from tasks.asr.head import DEFAULT_ALPHABET, CharVocabulary, normalize_transcript

log = logging.getLogger(__name__)


class ASRDataModule(HFDataModule):
    """Waveforms (B, S), their lengths and character targets from audio files or hub Audio columns.

    Rows: ``audio``, a path (absolute, or relative to ``audio_root``: by default the dataset's own
    directory), a hub ``Audio`` column (read with ``decode=False`` and decoded by soundfile, any rate
    resampled to ``sample_rate``) or a decoded ``{array, sampling_rate}``; ``text``, the transcript
    (compared after `normalize_transcript`: lowercase, no punctuation); optionally a group column
    (``utterance_type``) for per-type WER.

    Batches: items of similar duration under a budget of ``max_frames`` padded 10 ms frames
    (`LengthBucketBatchSampler`, at most ``batch_size`` utterances); validation and test are bucketed
    too (fixed order). Durations come from a ``duration`` column or the files' headers.

    Args:
        sample_rate: rate the model hears (Hz).
        alphabet: the CTC characters (the head's); transcript characters outside it are dropped, counted
            in the log.
        group_column: column of utterance types for per-type metrics (None: none).
        speed_factors: training speed perturbation (Ko et al. 2015): each utterance is resampled by a
            factor drawn from this list (1.0 = unchanged), which shifts tempo, pitch and formants together.
        noise_prob / noise_snr_db: with this probability, white noise at an SNR uniform in the range (dB).
        max_seconds: training utterances longer than this are left out (counted in the log; evaluation
            splits keep everything).
        max_frames: padded-frame budget of a batch (frames of ``hop_ms``).
        hop_ms: the front end's hop, to count frames.
        audio_root: directory relative paths resolve against (None: the dataset directory).
        skip_bad_samples: drop rows whose audio cannot be read, with a logged count (every file's header
            is read at setup); False: such a row stops the run with its file named.
        train_size / validation_size / test_size / builder_seed / digit_fraction / builder_noise_snr_db:
            the espeak-ng builder.
        **kwargs: `HFDataModule` arguments (source, path, name, batch_size, ...).
    """

    task_name = "asr"
    required_columns = ("audio", "text")

    def __init__(
        self,
        *,
        sample_rate: int = 16_000,
        alphabet: str = DEFAULT_ALPHABET,
        group_column: str | None = "utterance_type",
        speed_factors: tuple[float, ...] = (0.9, 1.0, 1.1),
        noise_prob: float = 0.5,
        noise_snr_db: tuple[float, float] = (10.0, 40.0),
        max_seconds: float = 20.0,
        max_frames: int = 12_000,
        hop_ms: float = 10.0,
        audio_root: str | None = None,
        skip_bad_samples: bool = False,
        train_size: int = 5000,
        validation_size: int = 500,
        test_size: int = 1000,
        builder_seed: int = 0,
        digit_fraction: float = 0.5,
        builder_noise_snr_db: tuple[float, float] | None = (20.0, 40.0),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if any(f <= 0 for f in speed_factors) or not speed_factors:
            raise ValueError(f"data.speed_factors={list(speed_factors)} must be positive factors, e.g. [0.9, 1.0, 1.1]")
        if not 0.0 <= noise_prob <= 1.0:
            raise ValueError(f"data.noise_prob={noise_prob} must be in [0, 1]")
        self.sample_rate, self.group_column = sample_rate, group_column
        self.vocabulary = CharVocabulary(alphabet)
        self.speed_factors, self.noise_prob, self.noise_snr_db = list(speed_factors), noise_prob, tuple(noise_snr_db)
        self.max_seconds, self.max_frames, self.hop_ms = max_seconds, max_frames, hop_ms
        self.audio_root = Path(audio_root) if audio_root else None
        self.skip_bad_samples = skip_bad_samples
        self.durations: dict[str, np.ndarray] = {}  # split -> (N,) seconds
        self.builder_args = {
            "train_size": train_size, "validation_size": validation_size, "test_size": test_size, "seed": builder_seed,
            "digit_fraction": digit_fraction,
            "noise_snr_db": None if builder_noise_snr_db is None else tuple(builder_noise_snr_db),
        }

    def builder_params(self) -> dict[str, Any]:
        return {"builder": "espeak-speech", "version": 1, **self.builder_args}

    def save_build(self, directory: Path) -> None:
        build_speech(directory, **self.builder_args).save_to_disk(str(directory))

    @property
    def root(self) -> Path | None:
        """Where relative audio paths resolve."""
        return self.files_root(self.audio_root)

    # ---- loading ----------------------------------------------------------------------------
    def prepare(self, dataset: DatasetDict) -> DatasetDict:
        """Hub ``Audio`` columns are read as ``{bytes, path}`` (no torchcodec); every row's duration is
        found (column or header), unreadable rows dropped when ``skip_bad_samples``, transcripts checked."""
        for name in list(dataset):
            split = dataset[name]
            feature = split.features["audio"]
            if isinstance(feature, Audio) and feature.decode:
                split = split.cast_column("audio", Audio(decode=False))
            durations, bad = self._durations(split, name)
            if bad:
                keep = np.setdiff1d(np.arange(len(split)), [i for i, _ in bad])
                log.warning(
                    "data.skip_bad_samples: skipped %d of %d recordings of split '%s' that cannot be read, e.g. %s",
                    len(bad), len(split), name, "; ".join(reason for _, reason in bad[:3]),
                )
                split, durations = split.select(keep), durations[keep]
            if name == "train":
                long = np.flatnonzero(durations > self.max_seconds)
                if len(long):
                    log.warning("left out %d training utterances longer than data.max_seconds=%s s", len(long), self.max_seconds)
                    keep = np.flatnonzero(durations <= self.max_seconds)
                    split, durations = split.select(keep), durations[keep]
            self._check_transcripts(split, name)
            dataset[name], self.durations[name] = split, durations
        return dataset

    def _durations(self, split: Dataset, name: str) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """(N,) seconds of every row, from a ``duration`` column or the audio headers, and the unreadable rows."""
        if "duration" in split.column_names and not self.skip_bad_samples:
            return np.asarray(split["duration"], dtype=np.float64), []
        durations, bad = np.zeros(len(split)), []
        for index, row in enumerate(split.select_columns(["audio"])):
            try:
                frames, rate = audio_info(row["audio"], root=self.root)
                if frames == 0:
                    raise AudioReadError(f"audio {row['audio']} holds no samples (an empty recording)")
            except AudioReadError as err:
                if not self.skip_bad_samples:
                    raise ValueError(
                        f"sample {index} of split '{name}' in {self.origin}: {err}. Fix or drop that row, or set "
                        "data.skip_bad_samples=true"
                    ) from None
                bad.append((index, str(err)))
                continue
            durations[index] = frames / rate
        return durations, bad

    def _check_transcripts(self, split: Dataset, name: str) -> None:
        unknown: set[str] = set()
        for index, text in enumerate(split["text"]):
            normalized = normalize_transcript(text or "")
            if not self.vocabulary.encode(normalized):
                row_id = split[index]["id"] if "id" in split.column_names else index
                raise ValueError(
                    f"sample {index} (id {row_id}) of split '{name}' in {self.origin} has no transcript characters in "
                    f"the alphabet (text {text!r}); drop the row or extend model.tasks.asr.head.alphabet"
                )
            unknown |= self.vocabulary.unknown(normalized)
        if unknown:
            log.warning(
                "split '%s': transcript characters %s are not in the alphabet and are dropped from the targets",
                name, "".join(sorted(unknown)),
            )

    def transcripts(self, split: str = "train") -> list[str]:
        """A split's transcripts as the model spells them (normalised, alphabet characters only)."""
        if split not in self.raw_splits:
            raise ValueError(f"no '{split}' split to read transcripts from (set up splits: {sorted(self.raw_splits)})")
        return [self.vocabulary.decode(self.vocabulary.encode(normalize_transcript(t or ""))) for t in self.raw_splits[split]["text"]]

    def transcript_words(self, split: str = "train") -> list[str]:
        """The distinct words of a split's transcripts (the ``train`` lexicon)."""
        return sorted({word for text in self.transcripts(split) for word in text.split()})

    # ---- items and batches ---------------------------------------------------------------------
    def preprocess(self, row: dict[str, Any], *, train: bool) -> dict[str, Any]:
        try:
            waveform = read_audio(row["audio"], sample_rate=self.sample_rate, root=self.root)  # (S,) float32
        except AudioReadError as err:
            raise AudioReadError(f"{err} (data.skip_bad_samples=true skips unreadable recordings)") from None
        if train:
            waveform = self._augment(waveform)
        text = normalize_transcript(row["text"]) if row.get("text") is not None else None
        targets = self.vocabulary.encode(text) if text is not None else []
        return {
            "audio": torch.from_numpy(waveform),
            "targets": torch.tensor(targets, dtype=torch.long),
            "text": None if text is None else self.vocabulary.decode(targets),  # what the model can spell
            "group": row.get(self.group_column) if self.group_column else None,
            "id": row.get("id"),
        }

    def _augment(self, waveform: np.ndarray) -> np.ndarray:
        """Speed perturbation and additive white noise, drawn from torch's RNG (seeded per worker by Lightning)."""
        factor = self.speed_factors[int(torch.randint(len(self.speed_factors), ()))]
        if factor != 1.0:  # play `factor` times faster: resample to rate / factor, heard at the rate
            waveform = resample(waveform, self.sample_rate, round(self.sample_rate / factor / 100) * 100)
        if self.noise_prob > 0 and float(torch.rand(())) < self.noise_prob:
            low, high = self.noise_snr_db
            snr_db = low + (high - low) * float(torch.rand(()))
            power = float(np.mean(waveform.astype(np.float64) ** 2)) or 1e-8
            noise = torch.randn(len(waveform)).numpy() * np.sqrt(power / 10 ** (snr_db / 10))
            waveform = np.clip(waveform + noise.astype(np.float32), -1.0, 1.0)
        return waveform

    def frame_counts(self, split_name: str) -> list[int]:
        """(N,) 10 ms frames of each utterance of a split (the bucketing lengths)."""
        return [int(s * 1000 / self.hop_ms) + 1 for s in self.durations[split_name]]

    def batch_sampler(
        self, split_name: str, dataset: TorchDataset, *, shuffle: bool, num_replicas: int = 1, rank: int = 0
    ) -> Sampler[list[int]] | None:
        if split_name not in self.durations or self.overfitting:
            return None
        train = split_name == "train"
        if not train and num_replicas > 1:
            # whole batches are dealt to the ranks: with fewer batches than ranks one rank would validate
            # nothing and miss the epoch-end metric sync; the default loader deals items instead
            return None
        return LengthBucketBatchSampler(
            self.frame_counts(split_name),
            max_tokens=self.max_frames,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=shuffle,
            seed=self.seed,
            bucket_width=10,
            num_replicas=num_replicas,
            rank=rank,
            even_batches=train,
        )

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        lengths = torch.tensor([len(s["audio"]) for s in samples])
        audio = torch.zeros(len(samples), int(lengths.max()))  # (B, S), zero-padded
        target_lengths = torch.tensor([len(s["targets"]) for s in samples])
        targets = torch.zeros(len(samples), max(1, int(target_lengths.max())), dtype=torch.long)  # (B, L)
        for b, sample in enumerate(samples):
            audio[b, : lengths[b]] = sample["audio"]
            targets[b, : target_lengths[b]] = sample["targets"]
        groups = [s["group"] for s in samples]
        return {
            "audio": audio,
            "audio_lengths": lengths,  # (B,)
            "targets": targets,
            "target_lengths": target_lengths,  # (B,)
            "texts": [s["text"] for s in samples],
            "groups": groups if any(g is not None for g in groups) else None,
            "ids": [s["id"] for s in samples],
            "index": torch.tensor([s["index"] for s in samples]),  # (B,)
        }
