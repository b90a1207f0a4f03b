"""Raw inputs for `predict.py`: image files, directories of images and saved datasets, with errors
that name the input and the fix. Task predictors build their rows from these."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset, DatasetDict, load_from_disk
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def is_saved_dataset(path: Path) -> bool:
    """A directory written by `datasets`' ``save_to_disk`` (a DatasetDict or a single Dataset)."""
    return path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists())


def load_saved_split(path: Path, *, split: str = "test") -> tuple[Dataset, list[str]]:
    """Rows of a saved dataset (its `split`, or its only split) and a display name per row."""
    dataset = load_from_disk(str(path))
    if isinstance(dataset, DatasetDict):
        if split in dataset:
            name = split
        elif len(dataset) == 1:
            name = next(iter(dataset))
        else:
            raise ValueError(f"input={path} holds splits {sorted(dataset)} and no '{split}'; save the rows to predict as '{split}'")
        dataset = dataset[name]
    else:
        name = path.name
    return dataset, [f"{name}[{i}]" for i in range(len(dataset))]


def looks_like_path(source: str) -> bool:
    """Whether a missing `source` was meant as a file (a suffix or a separator) rather than as text."""
    return "/" in source or "\\" in source or Path(source).suffix.lower() in (*IMAGE_SUFFIXES, ".json", ".txt")


def read_images(source: str, *, accepts: str) -> tuple[list[Image.Image], list[str]]:
    """The images of an image file or of a directory of images (sorted by name), decoded now so that a
    bad file fails before anything is written. ``accepts`` describes the task's inputs for errors."""
    path = Path(source)
    if not path.exists():
        if looks_like_path(source):
            raise FileNotFoundError(f"input={source} does not exist; give {accepts}")
        raise ValueError(f"input='{source}' is not a file or directory, and this task cannot read text; give {accepts}")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"input={source} is a directory without images ({', '.join(IMAGE_SUFFIXES)}); give {accepts}")
    images = []
    for file in files:
        try:
            with Image.open(file) as image:
                image.load()
                images.append(image.copy())
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"input {file} is not a readable image ({type(err).__name__}: {err}); give {accepts}") from err
    return images, [str(f) for f in files]
