"""DataModule for semantic segmentation: HF `image` / `annotation` schema -> images, class-id masks and
small-object masks, with joint image-mask augmentation (torchvision.transforms.v2)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from datasets import DatasetDict
from scipy import ndimage
from torchvision import tv_tensors
from torchvision.transforms import v2

from attnlab.data import HFDataModule
from tasks.segmentation.builder import SMALL_HEIGHT, build_cluttered_digits


class SegmentationDataModule(HFDataModule):
    """Images and masks resized to `image_size`; random shift / scale (and flips where labels allow) on train.

    Rows: ``image`` (PIL), ``annotation`` (PIL mask of class ids, same size), optional ``small_objects``
    (1 on pixels of small objects; derived from the mask when absent: connected components of one class
    under ``small_height`` pixels high). Batches: ``image`` (B, C, H, W), ``mask`` (B, H, W) int64 with
    ``ignore_index`` where unlabelled, ``small`` (B, H, W) bool.

    Args:
        image_size: side, or [height, width], images and masks are resized to (masks: nearest).
        in_chans: 1 (grey) or 3 (RGB).
        num_classes: classes including background; mask values must be < num_classes or ignore_index.
        ignore_index: mask value excluded from loss and metrics (also the fill of pixels shifted in).
        reduce_labels: the source's 0 means "other" (ADE20k / scene_parse_150): 0 -> ignore, k -> k - 1.
        small_height: objects under this many pixels high count as small (``miou_small``).
        augment: random affine (shift, scale) on training pairs; hflip: also random horizontal flips
            (off for digits: a mirrored digit is not a digit).
        translate / scale: affine ranges (fraction of the side, factor range).
        mean / std: image normalisation per channel.
        train_size / validation_size / test_size / min_height / max_height / builder_seed: the
            cluttered-digits builder (digit heights in pixels: min_height..max_height).
    """

    task_name = "segmentation"
    required_columns = ("image", "annotation")

    def __init__(
        self,
        *,
        image_size: int | tuple[int, int] = 64,
        in_chans: int = 1,
        num_classes: int = 11,
        ignore_index: int = 255,
        reduce_labels: bool = False,
        small_height: int = SMALL_HEIGHT,
        augment: bool = True,
        hflip: bool = False,
        translate: float = 0.1,
        scale: tuple[float, float] = (0.8, 1.25),
        mean: float = 0.5,
        std: float = 0.5,
        train_size: int = 8000,
        validation_size: int = 500,
        test_size: int = 1000,
        min_height: int = 6,
        max_height: int = 28,
        builder_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if in_chans not in (1, 3):
            raise ValueError(f"data.in_chans={in_chans}; use 1 (grey) or 3 (RGB)")
        if not 0 <= ignore_index <= 255 or ignore_index < num_classes:
            raise ValueError(
                f"data.ignore_index={ignore_index} must be in [data.num_classes={num_classes}, 255] (masks are 8-bit)"
            )
        self.in_chans, self.num_classes, self.ignore_index = in_chans, num_classes, ignore_index
        self.reduce_labels, self.small_height = reduce_labels, small_height
        self.builder_args = {"train_size": train_size, "validation_size": validation_size, "test_size": test_size,
                             "min_height": min_height, "max_height": max_height, "seed": builder_seed}
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(n) for n in image_size)  # (H, W)
        if len(size) != 2:
            raise ValueError(f"data.image_size={image_size}: give one side or [height, width]")
        self.image_size = size
        resize = [v2.Resize(size, antialias=True)]
        fill = {tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}  # pixels shifted in are unlabelled
        augmentation = []
        if augment:
            augmentation.append(v2.RandomAffine(degrees=0, translate=(translate, translate), scale=tuple(scale), fill=fill))
            if hflip:
                augmentation.append(v2.RandomHorizontalFlip())
        normalise = [v2.ToDtype(torch.float32, scale=True), v2.Normalize([mean] * in_chans, [std] * in_chans)]
        self.train_transform = v2.Compose(resize + augmentation + normalise)
        self.eval_transform = v2.Compose(resize + normalise)

    def builder_params(self) -> dict[str, Any]:
        return {"builder": "cluttered-digits", "version": 1, **self.builder_args}

    def build(self) -> DatasetDict:
        return build_cluttered_digits(**self.builder_args)

    def preprocess(self, row: dict[str, Any], *, train: bool) -> dict[str, Any]:
        image = row["image"].convert("L" if self.in_chans == 1 else "RGB")
        labels, small = self.read_masks(row, image.size)  # (H, W) uint8 each
        pair = tv_tensors.Mask(torch.from_numpy(np.stack([labels, small])))  # (2, H, W): moved together
        transform = self.train_transform if train else self.eval_transform
        pixels, pair = transform(tv_tensors.Image(v2.functional.pil_to_tensor(image)), pair)
        return {"image": pixels, "mask": pair[0].long(), "small": pair[1] == 1}

    def read_masks(self, row: dict[str, Any], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(class ids, small-object flags) as (H, W) uint8 arrays, checked against the image and the classes.

        Rows without an annotation (raw images in predict.py) get an all-ignore mask."""
        annotation = row.get("annotation")
        if annotation is None:
            return np.full(size[::-1], self.ignore_index, np.uint8), np.zeros(size[::-1], np.uint8)
        if annotation.size != size:
            raise ValueError(
                f"annotation is {annotation.size[0]}x{annotation.size[1]} (W x H) but its image is {size[0]}x{size[1]}; "
                "a mask must match its image pixel for pixel"
            )
        labels = np.asarray(annotation).astype(np.int64)  # L / P (palette indices are the ids) / I
        if labels.ndim != 2:
            raise ValueError(
                f"annotation is a {annotation.mode} image of shape {labels.shape}; give a single-channel mask of class "
                "ids (mode L, P or I), not colours"
            )
        if self.reduce_labels:  # 0 = "other" -> ignore; k -> k - 1
            labels = np.where((labels == 0) | (labels == self.ignore_index), self.ignore_index, labels - 1)
        bad = np.unique(labels[(labels >= self.num_classes) & (labels != self.ignore_index)])
        if bad.size:
            raise ValueError(
                f"annotation holds class ids {bad[:10].tolist()} >= data.num_classes={self.num_classes} that are not "
                f"data.ignore_index={self.ignore_index}; set data.num_classes (or data.reduce_labels=true for sets "
                "whose 0 means 'other')"
            )
        labels = labels.astype(np.uint8)
        if row.get("small_objects") is not None:
            small = (np.asarray(row["small_objects"]) > 0).astype(np.uint8)
        else:
            small = small_objects(labels, small_height=self.small_height, ignore_index=self.ignore_index)
        return labels, small

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "image": torch.stack([s["image"] for s in samples]),  # (B, C, H, W)
            "mask": torch.stack([s["mask"] for s in samples]),  # (B, H, W)
            "small": torch.stack([s["small"] for s in samples]),  # (B, H, W)
            "index": torch.tensor([s["index"] for s in samples]),  # (B,)
        }


def small_objects(labels: np.ndarray, *, small_height: int, ignore_index: int) -> np.ndarray:
    """(H, W) uint8: 1 on the pixels of every connected region of one class (background 0 and ignore
    excluded) whose bounding box is under `small_height` pixels high."""
    small = np.zeros(labels.shape, np.uint8)
    for class_id in np.unique(labels):
        if class_id in (0, ignore_index):
            continue
        regions, _ = ndimage.label(labels == class_id)
        for label, box in enumerate(ndimage.find_objects(regions), start=1):
            if box is not None and box[0].stop - box[0].start < small_height:
                small[regions == label] = 1
    return small

