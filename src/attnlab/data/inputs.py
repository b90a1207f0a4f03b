"""Raw inputs for `predict.py`: image files, directories of images, media files (video, audio) and saved
datasets, with errors that name the input and the fix. Task predictors build their rows from these."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, Features, Value, load_from_disk
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


def read_media_rows(
    source: str,
    *,
    column: str,
    suffixes: tuple[str, ...],
    accepts: str,
    defaults: dict[str, tuple[Value, Any]],
) -> tuple[Dataset, list[str]]:
    """Rows for tasks whose input is a file path column (video, audio): a saved dataset (its paths made
    absolute when relative to it), a file, or a directory of files with one of `suffixes` (sorted by name).

    Args:
        column: the path column (``video``, ``audio``).
        accepts: the task's inputs, for errors.
        defaults: the other columns the task's rows need, ``{name: (feature, value)}``, filled with
            ``value`` where the input has none (an unknown label or transcript).
    """
    path = Path(source)
    if source and is_saved_dataset(path):
        dataset, names = load_saved_split(path)
        if column not in dataset.column_names:
            raise ValueError(f"input={source} has no '{column}' column (it has {dataset.column_names})")
        if isinstance(dataset.features[column], Value):  # relative paths are relative to the dataset
            dataset = dataset.map(lambda row: {column: str(path / row[column])})
        for name, (_, value) in defaults.items():
            if name not in dataset.column_names:
                dataset = dataset.add_column(name, [value] * len(dataset))
        return dataset, names
    if not source or not path.exists():
        raise FileNotFoundError(f"input={source} does not exist; give {accepts}")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"input={source} is a directory without {column} files ({', '.join(suffixes)}); give {accepts}")
    features = Features({column: Value("string"), **{name: feature for name, (feature, _) in defaults.items()}})
    rows = {column: [str(f.resolve()) for f in files], **{name: [value] * len(files) for name, (_, value) in defaults.items()}}
    return Dataset.from_dict(rows, features=features), [str(f) for f in files]
