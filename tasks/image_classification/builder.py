"""Offline default: scikit-learn's 1,797 handwritten digits in the HF image-classification schema."""

from __future__ import annotations

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

FEATURES = Features({"image": Image(), "label": ClassLabel(names=[str(d) for d in range(10)])})


def build_digits(*, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2) -> DatasetDict:
    """8x8 grey digits (0..16 scaled to 0..255) with a fixed stratified train/validation/test split.

    Schema: ``image`` (PIL, mode L), ``label`` (ClassLabel '0'..'9').
    """
    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8)
    labels = digits.target.astype(np.int64)
    indices = np.arange(len(labels))
    rest, test = train_test_split(indices, test_size=test_fraction, stratify=labels, random_state=seed)
    train, val = train_test_split(
        rest, test_size=val_fraction / (1.0 - test_fraction), stratify=labels[rest], random_state=seed
    )

    def split(rows: np.ndarray) -> Dataset:
        rows = np.sort(rows)
        return Dataset.from_dict(
            {"image": [PILImage.fromarray(pixels[i], mode="L") for i in rows], "label": labels[rows].tolist()},
            features=FEATURES,
        )

    return DatasetDict({"train": split(train), "validation": split(val), "test": split(test)})
