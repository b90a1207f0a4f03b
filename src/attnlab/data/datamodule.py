"""Base DataModule over HF `datasets`: one preprocessing path for builder, hub and disk sources."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import lightning as L
from datasets import Dataset, DatasetDict, load_dataset, load_from_disk
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset

from attnlab.data.fingerprint import params_fingerprint
from attnlab.data.sampler import EpochSeededSampler

log = logging.getLogger(__name__)

Source = Literal["builder", "hub", "disk"]
SPLITS = ("train", "validation", "test")


class PreprocessedSplit(TorchDataset):
    """Applies `preprocess(row)` lazily to one split; a failing row is reported by split and index."""

    def __init__(self, split: Dataset, preprocess: Callable[[dict[str, Any]], dict[str, Any]], *, name: str, origin: str) -> None:
        self.split, self.preprocess, self.name, self.origin = split, preprocess, name, origin

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            sample = self.preprocess(self.split[index])
        except Exception as err:  # re-raised with the sample's address
            raise ValueError(
                f"cannot read sample {index} of split '{self.name}' in {self.origin}: {type(err).__name__}: {err}. "
                "Fix or drop that row (e.g. dataset.filter) and re-save the dataset."
            ) from err
        sample["index"] = index
        return sample


class HFDataModule(L.LightningDataModule, ABC):
    """Serves a task's `DatasetDict` (splits train / validation / test) to Lightning.

    Args:
        source: ``builder`` (offline default: the task's builder writes the dataset once under
            ``data_dir``, keyed by its parameters), ``hub`` (``load_dataset(path, name)``) or
            ``disk`` (``load_from_disk(path)``, or parquet / imagefolder files under ``path``).
        path: hub name or local directory (hub, disk).
        name: hub configuration name.
        data_dir: where built datasets are cached.
        column_map: rename source columns to the task schema, e.g. ``{img: image}``.
        split_map: use source splits under the names a run needs, ``{train: train.100}`` (LibriSpeech
            names its training splits train.100 / train.360); unmapped splits keep their names.
        val_fraction: carve validation out of train when the source has no validation split.
        batch_size / eval_batch_size / num_workers: loader settings.
        seed: data order and splitting seed.
    """

    task_name: str = "task"
    required_columns: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        source: Source = "builder",
        path: str | None = None,
        name: str | None = None,
        data_dir: str = "data",
        column_map: dict[str, str] | None = None,
        split_map: dict[str, str] | None = None,
        val_fraction: float = 0.1,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if source not in ("builder", "hub", "disk"):
            raise ValueError(f"data.source='{source}' is unknown; choose builder, hub or disk")
        if source in ("hub", "disk") and not path:
            raise ValueError(f"data.source={source} needs data.path=<{'hub name' if source == 'hub' else 'directory'}>")
        self.source, self.path, self.name = source, path, name
        self.data_dir = Path(data_dir)
        self.column_map = dict(column_map or {})
        self.split_map = dict(split_map or {})
        self.val_fraction, self.seed = val_fraction, seed
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers = num_workers
        self.splits: dict[str, TorchDataset] = {}
        self.raw_splits: dict[str, Dataset] = {}
        self._train_position: dict[str, int] | None = None  # set by a checkpoint (mid-epoch resume)

    # ---- what a task defines -------------------------------------------------------------
    @abstractmethod
    def builder_params(self) -> dict[str, Any]:
        """JSON-serialisable parameters of the offline builder (they key its cache directory)."""

    def build(self) -> DatasetDict:
        """Build the offline dataset in the public dataset's schema (implement this or `save_build`)."""
        raise TypeError(f"{type(self).__name__} implements neither build() nor save_build(); implement one of them")

    def save_build(self, directory: Path) -> None:
        """Write the built dataset into ``directory`` (a fresh staging folder, moved into place once
        complete). Default: ``build().save_to_disk``; a builder that writes files the rows point at
        (videos, audio) writes them here too, under ``directory``, and stores paths relative to it."""
        self.build().save_to_disk(str(directory))

    @abstractmethod
    def preprocess(self, row: dict[str, Any], *, train: bool) -> dict[str, Any]:
        """One raw row -> what `collate` takes (the default `wrap_split` applies it per sample)."""

    def wrap_split(self, split: Dataset, name: str) -> TorchDataset:
        """One loaded split -> the torch Dataset its loader reads; default: rows through `preprocess`.

        Training rows get train-time preprocessing (augmentation) except when overfitting, where one
        fixed batch must stay fixed (``trainer.overfit_batches``, the ``debug=overfit`` preset).
        """
        train = name == "train" and not self.overfitting
        return PreprocessedSplit(split, lambda row: self.preprocess(row, train=train), name=name, origin=self.origin)

    @abstractmethod
    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Samples -> batch."""

    def prepare(self, dataset: DatasetDict) -> DatasetDict:
        """Hook after loading and schema checks (e.g. build an answer vocabulary from train)."""
        return dataset

    # ---- loading ---------------------------------------------------------------------------
    @property
    def overfitting(self) -> bool:
        """True under ``trainer.overfit_batches``: training batches are then fixed (no shuffling, no augmentation)."""
        return bool(self.trainer is not None and self.trainer.overfit_batches)

    @property
    def built_path(self) -> Path:
        return self.data_dir / self.task_name / params_fingerprint(self.builder_params())

    def files_root(self, override: str | Path | None = None) -> Path | None:
        """Where relative file paths in rows (videos, audio) resolve: `override` when given, else the built
        dataset's directory (builder), the dataset directory (disk), or None (hub rows carry their bytes)."""
        if override is not None:
            return Path(override)
        if self.source == "builder":
            return self.built_path
        return Path(self.path) if self.source == "disk" else None

    @property
    def origin(self) -> str:
        return str(self.built_path) if self.source == "builder" else f"{self.source}:{self.path}"

    def prepare_data(self) -> None:
        """Runs once per node: build the offline dataset if it is not cached yet."""
        if self.source == "builder" and not (self.built_path / "dataset_dict.json").exists():
            self._build_to_disk()

    def _build_to_disk(self) -> None:
        target = self.built_path
        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("building %s dataset into %s", self.task_name, target)
        staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
        try:
            self.save_build(staging / "dataset")
            if not target.exists():  # a concurrent process may have finished first
                os.replace(staging / "dataset", target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def load(self, stage: str | None = None) -> DatasetDict:
        """The raw DatasetDict from the configured source, splits normalised, schema checked.

        Testing and predicting (``stage`` test / predict) need only a 'test' split, so `eval.py` reads
        datasets that hold nothing else.
        """
        if self.source == "builder":
            if not (self.built_path / "dataset_dict.json").exists():
                self._build_to_disk()
            dataset = load_from_disk(str(self.built_path))
        elif self.source == "disk":
            dataset = _load_local(Path(self.path))
        else:
            dataset = self._load_hub()
        if isinstance(dataset, Dataset):
            dataset = DatasetDict({"train": dataset})
        if self.split_map:
            dataset = self._map_splits(dataset)
        if self.column_map:
            dataset = dataset.rename_columns(self.column_map)
        dataset = self._normalise_splits(dataset, need_train=stage not in ("test", "predict"))
        self._check_schema(dataset)
        return self.prepare(dataset)

    def _load_hub(self) -> DatasetDict:
        try:
            return load_dataset(self.path, self.name)
        except Exception as err:  # network / hub errors come in many types
            raise ConnectionError(
                f"cannot load data.path='{self.path}' (name={self.name}) from the Hugging Face hub: "
                f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. Offline? Use "
                "data.source=builder (the offline default) or data.source=disk data.path=<saved dataset dir>."
            ) from err

    def _map_splits(self, dataset: DatasetDict) -> DatasetDict:
        missing = sorted(set(self.split_map.values()) - set(dataset))
        if missing:
            raise ValueError(
                f"data.split_map={self.split_map} names split(s) {missing} that {self.origin} does not have "
                f"(it has {sorted(dataset)})"
            )
        mapped = {target: dataset[source] for target, source in self.split_map.items()}
        kept = {name: split for name, split in dataset.items() if name not in self.split_map.values() and name not in mapped}
        return DatasetDict({**kept, **mapped})

    def _normalise_splits(self, dataset: DatasetDict, *, need_train: bool = True) -> DatasetDict:
        aliases = {"valid": "validation", "val": "validation", "dev": "validation"}
        dataset = DatasetDict({aliases.get(k, k): v for k, v in dataset.items()})
        if not need_train and "test" in dataset:
            return dataset
        if "train" not in dataset:
            raise ValueError(
                f"dataset {self.origin} has no 'train' split (has {sorted(dataset)}); name the one to train on "
                f"with data.split_map='{{train: <split>}}'"
            )
        if "validation" not in dataset:
            parts = dataset["train"].train_test_split(test_size=self.val_fraction, seed=self.seed)
            dataset["train"], dataset["validation"] = parts["train"], parts["test"]
            log.info("no validation split in %s: using %.0f%% of train", self.origin, 100 * self.val_fraction)
        if "test" not in dataset:
            raise ValueError(
                f"dataset {self.origin} has no 'test' split (has {sorted(dataset)}); add one, or rename a split "
                "to 'test' before saving it"
            )
        return dataset

    def _check_schema(self, dataset: DatasetDict) -> None:
        for split_name in [name for name in SPLITS if name in dataset]:
            columns = dataset[split_name].column_names
            missing = [c for c in self.required_columns if c not in columns]
            if missing:
                raise ValueError(
                    f"dataset {self.origin} split '{split_name}' lacks column(s) {missing} required by task "
                    f"{self.task_name} (it has {columns}); rename with data.column_map='{{<old>: {missing[0]}}}'"
                )

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        dataset = self.load(stage)
        self.raw_splits = {name: dataset[name] for name in SPLITS if name in dataset}  # rows in the task schema
        for split_name, split in self.raw_splits.items():
            self.splits[split_name] = self.wrap_split(split, split_name)

    # ---- loaders ---------------------------------------------------------------------------
    def batch_sampler(
        self, split_name: str, dataset: TorchDataset, *, shuffle: bool, num_replicas: int = 1, rank: int = 0
    ) -> Sampler[list[int]] | None:
        """Hook: the batch sampler of one split's loader, or None (default) for batches of ``batch_size``.

        Return e.g. a `LengthBucketBatchSampler` over the items' lengths for length bucketing and
        token-budget batches. ``shuffle`` is True for training (False when overfitting: fixed batches);
        ``num_replicas`` / ``rank`` are the trainer's data-parallel size and this process's rank (1 / 0
        without a trainer), and the sampler must shard by them itself: Lightning cannot inject its
        DistributedSampler into a custom batch sampler, so a DDP run needs
        ``trainer.use_distributed_sampler=false`` (the splits this hook returns None for shard themselves
        anyway). For evaluation splits pass ``even_batches=False`` so every item is counted once; a
        sampler with ``resume_at(epoch, batches)`` continues a run resumed mid-epoch where it stopped.
        """
        return None

    def _loader(self, split_name: str, *, shuffle: bool) -> DataLoader:
        """Training: epoch-seeded shuffle, padded to equal shares under DDP, resumable mid-epoch.
        Evaluation: the plain order, each item on exactly one rank (every test item counted once)."""
        split = self.splits[split_name]
        replicas = (self.trainer.distributed_sampler_kwargs if self.trainer is not None else None) or {}
        num_replicas, rank = replicas.get("num_replicas", 1), replicas.get("rank", 0)
        shuffle = shuffle and not self.overfitting  # one fixed batch when overfitting
        resume = self._train_position if split_name == "train" else None
        batches = self.batch_sampler(split_name, split, shuffle=shuffle, num_replicas=num_replicas, rank=rank)
        if batches is not None:
            connector = getattr(self.trainer, "_accelerator_connector", None)
            if num_replicas > 1 and getattr(connector, "use_distributed_sampler", False):
                raise ValueError(
                    f"{type(self).__name__}.batch_sampler gives split '{split_name}' a {type(batches).__name__}, "
                    f"which shards itself across the {num_replicas} ranks, but Lightning would try to wrap it in a "
                    "DistributedSampler (and fail); set trainer.use_distributed_sampler=false"
                )
            if resume is not None and hasattr(batches, "resume_at"):
                batches.resume_at(resume["epoch"], resume["batches"])
            return DataLoader(
                split,
                batch_sampler=batches,
                collate_fn=self.collate,
                num_workers=self.num_workers,
                persistent_workers=self.num_workers > 0,
            )
        sampler = None  # overfitting: Lightning serves the first batch(es) in order
        if split_name != "train" or not self.overfitting:
            # a DistributedSampler subclass that shards itself: Lightning keeps it instead of wrapping it
            sampler = EpochSeededSampler(
                len(split), seed=self.seed, shuffle=shuffle, num_replicas=num_replicas, rank=rank, even=shuffle
            )
            if resume is not None:
                sampler.resume_at(resume["epoch"], resume["batches"] * self.batch_size)
        return DataLoader(
            split,
            batch_size=self.batch_size if split_name == "train" else self.eval_batch_size,  # overfitting: train batches too
            sampler=sampler,
            collate_fn=self.collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    # ---- checkpointed state -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Where training stands in its epoch, so a resumed run skips the batches already trained on.

        Subclasses with state of their own (vocabularies) extend this dict and `load_state_dict`.
        """
        trainer = self.trainer
        if trainer is None or trainer.state.fn != "fit":
            return {}
        completed = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        return {"train_position": {"epoch": trainer.current_epoch, "batches": completed}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._train_position = state_dict.get("train_position")

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()


def _load_local(path: Path) -> DatasetDict | Dataset:
    """A `save_to_disk` directory, or parquet / csv / json / image-folder files under `path`."""
    if not path.exists():
        raise FileNotFoundError(f"data.path={path} does not exist; give a directory written by save_to_disk or of data files")
    if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
        return load_from_disk(str(path))
    return load_dataset(str(path))
