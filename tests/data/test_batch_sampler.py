"""LengthBucketBatchSampler and HFDataModule's batch_sampler hook: coverage, budget, padding, order, DDP."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import pytest
import torch
from datasets import Dataset, DatasetDict
from lightning.fabric.utilities.data import _set_sampler_epoch
from lightning.pytorch.trainer.states import RunningStage
from torch.utils.data import BatchSampler, DataLoader

from attnlab.data import HFDataModule, LengthBucketBatchSampler

N = 2000


def skewed_lengths(count: int = N, seed: int = 0) -> torch.Tensor:
    """(count,) long-tailed lengths like sentences in tokens: many short, a few very long."""
    generator = torch.Generator().manual_seed(seed)
    normal = torch.randn(count, generator=generator)
    return (torch.exp(3.0 + 0.8 * normal)).long().clamp(1, 1000)  # median ~20, max in the hundreds


def padding_waste(batches: list[list[int]], lengths: torch.Tensor) -> float:
    """Fraction of the padded (B, L) tensors that is padding, over all batches."""
    padded = sum(int(lengths[b].max()) * len(b) for b in batches)
    return 1.0 - sum(int(lengths[b].sum()) for b in batches) / padded


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize(
    "limits", [{"max_tokens": 2048}, {"batch_size": 32}, {"max_tokens": 2048, "batch_size": 16}]
)
def test_every_index_once_per_epoch_within_limits(shuffle, limits):
    lengths = skewed_lengths()
    sampler = LengthBucketBatchSampler(lengths, shuffle=shuffle, seed=3, **limits)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(i for b in batches for i in b) == list(range(N))
        for batch in batches:
            assert int(lengths[batch].max()) * len(batch) <= limits.get("max_tokens", 10**9)
            assert len(batch) <= limits.get("batch_size", N)


def test_item_over_budget_goes_alone(caplog):
    lengths = torch.tensor([5, 300, 7, 6, 500, 5, 8])
    with caplog.at_level(logging.WARNING):
        sampler = LengthBucketBatchSampler(lengths, max_tokens=100, shuffle=False)
    assert "2 item(s) are longer than max_tokens=100" in caplog.text
    batches = list(sampler)
    assert [4] in batches and [1] in batches
    assert batches[0] == [4]  # evaluation order: longest first
    assert sorted(i for b in batches for i in b) == list(range(7))


def test_padding_waste_far_below_random_batches():
    lengths = skewed_lengths()
    bucketed = list(LengthBucketBatchSampler(lengths, max_tokens=2048, seed=0))
    # random batches of the same count (the same mean batch size)
    order = torch.randperm(N, generator=torch.Generator().manual_seed(0))
    random_batches = [chunk.tolist() for chunk in order.chunk(len(bucketed))]
    bucketed_waste, random_waste = padding_waste(bucketed, lengths), padding_waste(random_batches, lengths)
    assert random_waste > 0.5  # the skewed lengths make random batches mostly padding
    assert bucketed_waste < 0.15 * random_waste, (bucketed_waste, random_waste)  # measured: 0.07 vs 0.84


def test_order_depends_only_on_seed_and_epoch():
    lengths = skewed_lengths()

    def order(seed: int, epoch: int) -> list[list[int]]:
        sampler = LengthBucketBatchSampler(lengths, max_tokens=2048, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(0, 3) == order(0, 3)  # a resumed run sees the same batches
    assert order(0, 0) != order(0, 1)
    assert order(0, 0) != order(1, 0)
    assert len(order(0, 0)) == len(order(0, 1))  # Lightning counts batches once per fit
    evaluation = LengthBucketBatchSampler(lengths, max_tokens=2048, shuffle=False)
    first = list(evaluation)
    evaluation.set_epoch(5)
    assert list(evaluation) == first


def test_lightning_set_epoch_reaches_the_batch_sampler():
    sampler = LengthBucketBatchSampler(skewed_lengths(), max_tokens=2048, seed=0)
    loader = DataLoader(range(N), batch_sampler=sampler)
    _set_sampler_epoch(loader, 4)  # what Lightning's fit loop calls before each epoch
    assert sampler.epoch == 4


def test_bucket_width_keeps_budget_and_mixes_more():
    lengths = skewed_lengths()

    def distinct_batches(sampler: LengthBucketBatchSampler, epochs: int = 3) -> int:
        batches = set()
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            batches |= {frozenset(batch) for batch in sampler}
        return len(batches)

    wide = LengthBucketBatchSampler(lengths, max_tokens=2048, seed=0, bucket_width=8)
    for batch in wide:
        assert int(lengths[batch].max()) * len(batch) <= 2048  # the true lengths stay within budget
    assert distinct_batches(wide) > distinct_batches(
        LengthBucketBatchSampler(lengths, max_tokens=2048, seed=0)
    )


@pytest.mark.parametrize("replicas", [2, 3])
def test_ddp_ranks_yield_equal_counts_and_cover_everything(replicas):
    lengths = skewed_lengths()
    ranks = [
        LengthBucketBatchSampler(lengths, max_tokens=2048, seed=0, num_replicas=replicas, rank=r)
        for r in range(replicas)
    ]
    for sampler in ranks:
        sampler.set_epoch(2)
    per_rank = [list(sampler) for sampler in ranks]
    assert len({len(batches) for batches in per_rank}) == 1
    assert all(len(batches) == len(sampler) for batches, sampler in zip(per_rank, ranks))
    total = sum(len(batches) for batches in per_rank)
    global_count = len(ranks[0].global_batches())
    assert global_count <= total < global_count + replicas  # at most replicas - 1 repeated batches
    seen = [i for batches in per_rank for batch in batches for i in batch]
    assert set(seen) == set(range(N))
    assert len(seen) - N <= (replicas - 1) * max(len(b) for batches in per_rank for b in batches)

    # evaluation without padding: ranks disjoint, counts differ by at most one
    evaluation = [
        list(
            LengthBucketBatchSampler(
                lengths, max_tokens=2048, shuffle=False, num_replicas=replicas, rank=r, even_batches=False
            )
        )
        for r in range(replicas)
    ]
    flat = [i for batches in evaluation for batch in batches for i in batch]
    assert sorted(flat) == list(range(N))
    assert max(map(len, evaluation)) - min(map(len, evaluation)) <= 1


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"batch_size": -1}, "batch_size"),
        ({"batch_size": 4, "bucket_width": 0}, "bucket_width"),
        ({"batch_size": 4, "num_replicas": 0}, "num_replicas"),
        ({"batch_size": 4, "num_replicas": 2, "rank": 2}, "rank"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LengthBucketBatchSampler([3, 4, 5], **kwargs)
    with pytest.raises(ValueError, match="lengths"):
        LengthBucketBatchSampler([1.5, 2.0], batch_size=2)


# ---- the datamodule hook -----------------------------------------------------------------------
class TokenRows(HFDataModule):
    """Minimal task: rows of token ids of varying length; batches by token budget when `max_tokens` is set."""

    task_name = "token_rows"
    required_columns = ("tokens",)

    def __init__(self, *, max_tokens: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_tokens = max_tokens
        self.hook_calls: list[dict[str, Any]] = []

    def builder_params(self) -> dict[str, Any]:
        return {"rows": 3}

    def build(self) -> DatasetDict:
        lengths = skewed_lengths(count=300, seed=1).clamp(max=200).tolist()
        rows = Dataset.from_dict({"tokens": [[1 + i % 7] * n for i, n in enumerate(lengths)]})
        return DatasetDict(
            {"train": rows, "validation": rows.select(range(60)), "test": rows.select(range(60, 120))}
        )

    def preprocess(self, row: dict[str, Any], *, train: bool) -> dict[str, Any]:
        return {"tokens": torch.tensor(row["tokens"])}

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        tokens = torch.nn.utils.rnn.pad_sequence([s["tokens"] for s in samples], batch_first=True)  # (B, L)
        return {"tokens": tokens, "index": torch.tensor([s["index"] for s in samples])}

    def batch_sampler(self, split_name, dataset, *, shuffle, num_replicas=1, rank=0):
        self.hook_calls.append(
            {"split": split_name, "shuffle": shuffle, "num_replicas": num_replicas, "rank": rank}
        )
        if self.max_tokens is None:
            return None
        lengths = [len(t) for t in dataset.split["tokens"]]  # dataset: a PreprocessedSplit over the HF split
        return LengthBucketBatchSampler(
            lengths,
            max_tokens=self.max_tokens,
            shuffle=shuffle,
            seed=self.seed,
            num_replicas=num_replicas,
            rank=rank,
        )


def test_datamodule_loaders_use_the_hooks_batch_sampler(tmp_path):
    datamodule = TokenRows(max_tokens=512, data_dir=str(tmp_path), batch_size=8)
    datamodule.setup("fit")
    train, validation = datamodule.train_dataloader(), datamodule.val_dataloader()
    assert isinstance(train.batch_sampler, LengthBucketBatchSampler) and train.batch_sampler.shuffle
    assert (
        isinstance(validation.batch_sampler, LengthBucketBatchSampler)
        and not validation.batch_sampler.shuffle
    )
    assert [c["split"] for c in datamodule.hook_calls] == ["train", "validation"]
    assert datamodule.hook_calls[0] == {"split": "train", "shuffle": True, "num_replicas": 1, "rank": 0}
    seen = []
    for batch in train:
        assert batch["tokens"].numel() <= 512  # (B, L) within the budget
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(300))


def test_datamodule_without_a_batch_sampler_keeps_fixed_size_batches(tmp_path):
    datamodule = TokenRows(data_dir=str(tmp_path), batch_size=8)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    assert type(loader.batch_sampler) is BatchSampler and loader.batch_size == 8


def _trainer(**kwargs: Any) -> L.Trainer:
    return L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, **kwargs)


def test_datamodule_passes_ddp_rank_and_lightning_leaves_the_loader_alone(tmp_path):
    datamodule = TokenRows(max_tokens=512, data_dir=str(tmp_path))
    datamodule.setup("fit")
    datamodule.trainer = _trainer(accelerator="cpu", devices=2, strategy="ddp", use_distributed_sampler=False)
    loader = datamodule.train_dataloader()
    assert (loader.batch_sampler.num_replicas, loader.batch_sampler.rank) == (2, 0)
    # what Lightning does to every loader before use (2.6: `_DataConnector._prepare_dataloader`)
    prepared = datamodule.trainer._data_connector._prepare_dataloader(
        loader, shuffle=True, mode=RunningStage.TRAINING
    )
    assert prepared is loader


def test_datamodule_under_ddp_asks_for_use_distributed_sampler_false(tmp_path):
    datamodule = TokenRows(max_tokens=512, data_dir=str(tmp_path))
    datamodule.setup("fit")
    datamodule.trainer = _trainer(
        accelerator="cpu", devices=2, strategy="ddp"
    )  # use_distributed_sampler=True
    with pytest.raises(ValueError, match="trainer.use_distributed_sampler=false"):
        datamodule.train_dataloader()


def test_datamodule_overfitting_asks_for_fixed_batches(tmp_path):
    datamodule = TokenRows(max_tokens=512, data_dir=str(tmp_path))
    datamodule.setup("fit")
    datamodule.trainer = _trainer(accelerator="cpu", devices=1, overfit_batches=2)
    assert not datamodule.train_dataloader().batch_sampler.shuffle
