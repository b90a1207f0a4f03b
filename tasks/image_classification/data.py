"""DataModule for image classification: HF `image` / `label` schema -> normalised tensors."""

from __future__ import annotations

from typing import Any

import torch
from datasets import DatasetDict
from torchvision.transforms import v2

from attnlab.data import HFDataModule
from tasks.image_classification.builder import build_digits


class ImageClassificationDataModule(HFDataModule):
    """Images resized to `image_size` with `in_chans` channels; light affine augmentation on train.

    Args:
        image_size: side, or [height, width], the images are resized to (the adapter's image_size).
        in_chans: 1 (grey) or 3 (RGB) channels.
        mean / std: normalisation per channel.
        augment: random affine (rotation, shift, scale) on training images.
        rotate / translate / scale: augmentation ranges (degrees, fraction of side, factor range).
        builder_seed: seed of the digits builder's stratified split.
    """

    task_name = "image_classification"
    required_columns = ("image", "label")

    def __init__(
        self,
        *,
        image_size: int | tuple[int, int] = 8,
        in_chans: int = 1,
        mean: float = 0.5,
        std: float = 0.5,
        augment: bool = True,
        rotate: float = 10.0,
        translate: float = 0.1,
        scale: tuple[float, float] = (0.9, 1.1),
        builder_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if in_chans not in (1, 3):
            raise ValueError(f"data.in_chans={in_chans}; use 1 (grey) or 3 (RGB)")
        self.image_size, self.in_chans, self.builder_seed = image_size, in_chans, builder_seed
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(n) for n in image_size)  # (H, W)
        if len(size) != 2:
            raise ValueError(f"data.image_size={image_size}: give one side or [height, width]")
        base = [v2.ToImage(), v2.Resize(size, antialias=True), v2.ToDtype(torch.float32, scale=True)]
        normalise = [v2.Normalize([mean] * in_chans, [std] * in_chans)]
        affine = [v2.RandomAffine(degrees=rotate, translate=(translate, translate), scale=tuple(scale))] if augment else []
        self.train_transform = v2.Compose(base + affine + normalise)
        self.eval_transform = v2.Compose(base + normalise)

    def builder_params(self) -> dict[str, Any]:
        return {"builder": "sklearn-digits", "version": 1, "seed": self.builder_seed}

    def build(self) -> DatasetDict:
        return build_digits(seed=self.builder_seed)

    def preprocess(self, row: dict[str, Any], *, train: bool) -> dict[str, Any]:
        image = row["image"].convert("L" if self.in_chans == 1 else "RGB")
        transform = self.train_transform if train else self.eval_transform
        return {"image": transform(image), "label": int(row["label"])}

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "image": torch.stack([s["image"] for s in samples]),  # (B, C, H, W)
            "label": torch.tensor([s["label"] for s in samples]),  # (B,)
            "index": torch.tensor([s["index"] for s in samples]),  # (B,)
        }
