"""Digits builder and the builder / disk / hub sources of the image-classification DataModule."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from datasets import DatasetDict
from sklearn.datasets import load_digits
from tasks.image_classification.builder import build_digits
from tasks.image_classification.data import ImageClassificationDataModule

from attnlab.data import dataset_fingerprint


@pytest.fixture(scope="module")
def digits() -> DatasetDict:
    return build_digits(seed=0)


def test_builder_schema_and_stratified_split(digits):
    assert {k: len(v) for k, v in digits.items()} == {"train": 1257, "validation": 180, "test": 360}
    assert digits["train"].features["label"].names == [str(d) for d in range(10)]
    image = digits["test"][0]["image"]
    assert image.size == (8, 8) and image.mode == "L"
    totals = Counter(load_digits().target.tolist())
    test_counts = Counter(digits["test"]["label"])
    assert all(abs(test_counts[c] - 0.2 * totals[c]) <= 1 for c in range(10)), test_counts  # stratified


def test_builder_is_deterministic(digits):
    assert dataset_fingerprint(build_digits(seed=0)) == dataset_fingerprint(digits)
    assert dataset_fingerprint(build_digits(seed=1)) != dataset_fingerprint(digits)


def test_builder_source_writes_once_keyed_by_parameters(tmp_path):
    first = ImageClassificationDataModule(data_dir=str(tmp_path))
    first.prepare_data()
    (built,) = (tmp_path / "image_classification").iterdir()
    stamp = (built / "dataset_dict.json").stat().st_mtime_ns
    ImageClassificationDataModule(data_dir=str(tmp_path)).prepare_data()
    assert (built / "dataset_dict.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    ImageClassificationDataModule(data_dir=str(tmp_path), builder_seed=1).prepare_data()
    assert len(list((tmp_path / "image_classification").iterdir())) == 2


def _first_test_batch(datamodule) -> dict:
    datamodule.setup()
    return next(iter(datamodule.test_dataloader()))


def test_disk_source_serves_the_same_batches_as_the_builder(tmp_path, digits):
    digits.save_to_disk(str(tmp_path / "saved"))
    from_disk = _first_test_batch(ImageClassificationDataModule(source="disk", path=str(tmp_path / "saved")))
    built = _first_test_batch(ImageClassificationDataModule(data_dir=str(tmp_path / "cache")))
    assert torch.equal(from_disk["image"], built["image"]) and torch.equal(from_disk["label"], built["label"])


def test_hub_source_loads_a_local_dataset_repo_in_the_same_schema(tmp_path, digits):
    """`load_dataset(<dir>)` is the hub code path; a directory of parquet files stands in for a hub repo."""
    repo = tmp_path / "repo" / "data"
    repo.mkdir(parents=True)
    for split in ("train", "test"):  # no validation split: carved out of train
        digits[split].to_parquet(str(repo / f"{split}-00000-of-00001.parquet"))
    datamodule = ImageClassificationDataModule(source="hub", path=str(tmp_path / "repo"), val_fraction=0.1)
    batch = _first_test_batch(datamodule)
    assert batch["image"].shape == (64, 1, 8, 8)
    assert len(datamodule.splits["validation"]) == 126 and len(datamodule.splits["train"]) == 1257 - 126


def test_offline_hub_suggests_the_builder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("datasets.config.HF_HUB_OFFLINE", True, raising=False)
    datamodule = ImageClassificationDataModule(source="hub", path="attnlab-no-such-org/no-such-dataset")
    with pytest.raises(ConnectionError, match="data.source=builder"):
        datamodule.setup()


def test_column_map_renames_source_columns(tmp_path, digits):
    digits.rename_column("image", "img").save_to_disk(str(tmp_path / "renamed"))
    batch = _first_test_batch(
        ImageClassificationDataModule(source="disk", path=str(tmp_path / "renamed"), column_map={"img": "image"})
    )
    assert batch["image"].shape[1:] == (1, 8, 8)


def test_train_order_depends_only_on_seed_and_epoch(tmp_path):
    datamodule = ImageClassificationDataModule(data_dir=str(tmp_path), augment=False)
    datamodule.setup()
    loader = datamodule.train_dataloader()

    def order(epoch: int) -> list[int]:
        loader.sampler.set_epoch(epoch)
        return torch.cat([b["index"] for b in loader]).tolist()

    assert order(3) == order(3) != order(4)
    assert sorted(order(3)) == list(range(1257))


def test_non_square_images_reach_a_non_square_patch_grid(tmp_path, train_cfg):
    batch = _first_test_batch(ImageClassificationDataModule(data_dir=str(tmp_path), image_size=(8, 12)))
    assert batch["image"].shape[1:] == (1, 8, 12)
    from attnlab.checkpoints import build_model

    model = build_model(train_cfg("task=image_classification", "data.image_size=[8,12]").model, {})
    assert model.adapters["image_classification"].grid_size == (4, 6)  # 2-pixel patches
    assert model(batch, "image_classification")["logits"].shape == (len(batch["label"]), 10)
    with pytest.raises(ValueError, match=r"data.image_size=\[8, 12, 3\]"):
        ImageClassificationDataModule(data_dir=str(tmp_path), image_size=[8, 12, 3])
