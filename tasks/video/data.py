"""DataModule for video classification: UCF101-style ``video`` (a file) / ``label`` rows -> clips of T
frames, decoded with PyAV, sampled, resized and (in training) shifted and scaled alike in every frame."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Video
from torchvision import tv_tensors
from torchvision.transforms import v2

from attnlab.data import HFDataModule
from attnlab.data.video import Sampling, VideoReadError, read_video, sample_frame_indices
from tasks.video.builder import build_moving_digits

log = logging.getLogger(__name__)


class VideoDataModule(HFDataModule):
    """Clips (B, T, C, H, W) and labels from video files.

    Rows: ``video``, a path (absolute, or relative to ``video_root``: by default the dataset's own
    directory for the builder and disk sources) or a hub ``Video`` column (read with ``decode=False``
    as ``{bytes, path}``); ``label``, a class id. Every video is decoded whole, then ``num_frames``
    frames are taken: evenly spaced over the video (``uniform``; validation and test always), or a
    random window of frames ``frame_stride`` apart (``random``, training).

    Args:
        num_frames: frames T per clip.
        image_size: frame side, or [height, width], frames are resized to.
        in_chans: 1 (luma) or 3 (RGB).
        sampling: training frame sampling, uniform | random.
        frame_stride: frame step of random windows.
        augment: a random shift and scale, the same for every frame of a clip (no flips or rotations:
            a mirrored move_left is a move_right).
        translate / scale: affine ranges (fraction of the side, factor range).
        mean / std: normalisation.
        video_root: directory relative video paths resolve against (None: the dataset directory).
        skip_bad_samples: drop rows whose video cannot be decoded, with a logged count (every video is
            decoded once at setup to find them); False: such a row stops the run with its file named.
        cache_mb: keep decoded videos (uint8) of file paths in memory up to this many MiB per process, so
            later epochs skip decoding (0: decode every time). The moving-digits train split takes 47 MiB.
        train_size / validation_size / test_size / builder_seed: the moving-digits builder (which also
            renders ``num_frames`` frames at ``image_size``).
    """

    task_name = "video"
    required_columns = ("video", "label")

    def __init__(
        self,
        *,
        num_frames: int = 8,
        image_size: int | tuple[int, int] = 32,
        in_chans: int = 1,
        sampling: Sampling = "uniform",
        frame_stride: int = 1,
        augment: bool = True,
        translate: float = 0.1,
        scale: tuple[float, float] = (0.9, 1.1),
        mean: float = 0.5,
        std: float = 0.5,
        video_root: str | None = None,
        skip_bad_samples: bool = False,
        cache_mb: float = 256.0,
        train_size: int = 6000,
        validation_size: int = 500,
        test_size: int = 1000,
        builder_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if in_chans not in (1, 3):
            raise ValueError(f"data.in_chans={in_chans}; use 1 (grey) or 3 (RGB)")
        if sampling not in ("uniform", "random"):
            raise ValueError(f"data.sampling='{sampling}' is unknown; choose uniform or random")
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(n) for n in image_size)  # (H, W)
        if len(size) != 2:
            raise ValueError(f"data.image_size={image_size}: give one side or [height, width]")
        self.num_frames, self.image_size, self.in_chans = num_frames, size, in_chans
        self.sampling, self.frame_stride, self.skip_bad_samples = sampling, frame_stride, skip_bad_samples
        self.video_root = Path(video_root) if video_root else None
        self.class_names: list[str] | None = None  # from the label column's ClassLabel; kept in checkpoints
        self.cache_bytes, self._decoded, self._cached_bytes = int(cache_mb * 2**20), {}, 0
        self.builder_args = {"train_size": train_size, "validation_size": validation_size, "test_size": test_size,
                             "num_frames": num_frames, "image_size": size[0], "seed": builder_seed}
        resize = [v2.Resize(size, antialias=True)]
        augmentation = [v2.RandomAffine(degrees=0, translate=(translate, translate), scale=tuple(scale))] if augment else []
        normalise = [v2.ToDtype(torch.float32, scale=True), v2.Normalize([mean] * in_chans, [std] * in_chans)]
        self.train_transform = v2.Compose(resize + augmentation + normalise)
        self.eval_transform = v2.Compose(resize + normalise)

    def builder_params(self) -> dict[str, Any]:
        return {"builder": "moving-digits", "version": 1, **self.builder_args}

    def save_build(self, directory: Path) -> None:
        if self.image_size[0] != self.image_size[1]:
            raise ValueError(f"the moving-digits builder renders square frames; data.image_size={list(self.image_size)}")
        build_moving_digits(directory, **self.builder_args).save_to_disk(str(directory))

    @property
    def root(self) -> Path | None:
        """Where relative video paths resolve."""
        return self.files_root(self.video_root)

    def prepare(self, dataset: DatasetDict) -> DatasetDict:
        """Hub ``Video`` columns are read as ``{bytes, path}`` (no torchcodec); unreadable videos are
        dropped with a count when ``skip_bad_samples``."""
        for name in list(dataset):
            label = dataset[name].features["label"]
            if isinstance(label, ClassLabel) and self.class_names is None:
                self.class_names = list(label.names)
            feature = dataset[name].features["video"]
            if isinstance(feature, Video) and feature.decode:
                dataset[name] = dataset[name].cast_column("video", Video(decode=False))
            if self.skip_bad_samples:
                dataset[name] = self._drop_unreadable(dataset[name], name)
        return dataset

    def _drop_unreadable(self, split: Dataset, name: str) -> Dataset:
        videos = split.select_columns(["video"])
        bad, reasons = [], []
        for index, row in enumerate(videos):
            try:
                self.decode(row["video"])  # also fills the cache
            except VideoReadError as err:
                bad.append(index)
                reasons.append(str(err))
        if bad:
            log.warning(
                "data.skip_bad_samples: skipped %d of %d videos of split '%s' that cannot be read, e.g. %s",
                len(bad), len(split), name, "; ".join(reasons[:3]),
            )
            keep = np.setdiff1d(np.arange(len(split)), bad)
            split = split.select(keep)
        return split

    def preprocess(self, row: dict[str, Any], *, train: bool) -> dict[str, Any]:
        try:
            frames = self.decode(row["video"])  # (F, H, W[, 3]) uint8
        except VideoReadError as err:
            raise VideoReadError(f"{err} (data.skip_bad_samples=true skips unreadable videos)") from None
        sampling = self.sampling if train else "uniform"
        rng = None
        if sampling == "random":  # from torch's RNG, which Lightning seeds per worker
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ())))
        indices = sample_frame_indices(len(frames), self.num_frames, sampling=sampling, stride=self.frame_stride, rng=rng)
        clip = torch.from_numpy(np.ascontiguousarray(frames[indices]))  # (T, H, W[, 3])
        clip = clip.unsqueeze(1) if clip.dim() == 3 else clip.permute(0, 3, 1, 2)  # (T, C, H, W)
        transform = self.train_transform if train else self.eval_transform
        return {"video": transform(tv_tensors.Video(clip)).as_subclass(torch.Tensor), "label": int(row["label"])}

    def decode(self, video: str | dict[str, Any]) -> np.ndarray:
        """All frames of one video, from the in-memory cache when it holds them (file paths only)."""
        key = video if isinstance(video, str) else None
        if key is not None and key in self._decoded:
            return self._decoded[key]
        frames = read_video(video, root=self.root, grey=self.in_chans == 1)
        if key is not None and self._cached_bytes + frames.nbytes <= self.cache_bytes:
            self._decoded[key] = frames
            self._cached_bytes += frames.nbytes
        return frames

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "class_names": self.class_names}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.class_names = state_dict.get("class_names") or self.class_names

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "video": torch.stack([s["video"] for s in samples]),  # (B, T, C, H, W)
            "label": torch.tensor([s["label"] for s in samples]),  # (B,)
            "index": torch.tensor([s["index"] for s in samples]),  # (B,)
        }

