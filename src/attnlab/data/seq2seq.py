"""Base DataModule of text-to-text tasks: a tokenizer trained on the training split, pre-tokenized splits,
teacher-forcing batches.

A task subclass says where its texts are (`source_texts`, `target_texts`, optionally `entities`) and how
its offline dataset is built; everything else is shared. The tokenizer is trained once on the training
split's sources and targets (one vocabulary, tied embeddings), travels in every checkpoint through
`state_dict`, and a checkpoint's tokenizer wins over a freshly trained one, so `eval.py` and `predict.py`
map text exactly as training did.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from typing import Any, Literal

import torch
from datasets import Dataset, DatasetDict
from torch.utils.data import Dataset as TorchDataset

from attnlab.data.datamodule import HFDataModule
from attnlab.data.tokenized import TokenizedSplits
from attnlab.data.tokenizer import TextTokenizer

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # labels the loss skips (padding)


class TextPairs(TorchDataset):
    """One split, tokenized once: item i -> source / target ids and texts (and entities when known)."""

    def __init__(
        self,
        *,
        sources: list[str],
        targets: list[str],
        source_ids: list[list[int]],
        target_ids: list[list[int]],
        entities: list[list[str]] | None,
    ) -> None:
        self.sources, self.targets, self.entities = sources, targets, entities
        self.source_ids, self.target_ids = source_ids, target_ids

    def __len__(self) -> int:
        return len(self.sources)

    def lengths(self) -> list[int]:
        """Per item, the longer of its source and target in tokens (the batch cost of length bucketing)."""
        return [max(len(s), len(t)) for s, t in zip(self.source_ids, self.target_ids)]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "index": index,
            "source": self.sources[index],
            "target": self.targets[index],
            "source_ids": self.source_ids[index],
            "target_ids": self.target_ids[index],
            "entities": None if self.entities is None else self.entities[index],
        }


class Seq2SeqDataModule(TokenizedSplits, HFDataModule):
    """Source text -> target text over HF datasets (see the module docstring).

    Args:
        vocab_size: tokenizer vocabulary (specials and the 256 bytes included); the model's ``vocab_size``.
        tokenizer_model: ``bpe`` or ``unigram`` (HF tokenizers, byte-level: nothing is ever unknown).
        tokenizer_prefix_space: tokenize every text as " " + text, so a word opening the target has the same
            tokens as that word inside the source (what a pointer copies).
        max_source_len / max_target_len: token limits (EOS included); longer texts are cut and counted in
            the log, per split.
        max_tokens: if set, training batches group items of similar length under this padded-token budget
            (`LengthBucketBatchSampler`, at most ``batch_size`` items); None: plain batches of ``batch_size``.
        max_validation_items: score only the first N validation items (generation is slow); None: all.
        **kwargs: `HFDataModule` arguments (source, path, name, batch_size, ...).
    """

    def __init__(
        self,
        *,
        vocab_size: int = 8000,
        tokenizer_model: Literal["bpe", "unigram"] = "bpe",
        tokenizer_prefix_space: bool = False,
        max_source_len: int = 256,
        max_target_len: int = 128,
        max_tokens: int | None = None,
        max_validation_items: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        for key, value in (("max_source_len", max_source_len), ("max_target_len", max_target_len)):
            if not isinstance(value, int) or value < 2:
                raise ValueError(f"data.{key}={value} must be an integer >= 2 (a token and EOS)")
        self.vocab_size, self.tokenizer_model = vocab_size, tokenizer_model
        self.tokenizer_prefix_space = tokenizer_prefix_space
        self.max_source_len, self.max_target_len = max_source_len, max_target_len
        self.max_tokens, self.max_validation_items = max_tokens, max_validation_items
        self.tokenizer: TextTokenizer | None = None  # trained in `prepare` or restored from a checkpoint

    # ---- what a task defines ----------------------------------------------------------------
    @abstractmethod
    def source_texts(self, split: Dataset) -> list[str]:
        """The split's source texts, in row order."""

    @abstractmethod
    def target_texts(self, split: Dataset) -> list[str]:
        """The split's target texts, in row order ('' where a row has none, e.g. raw predict inputs)."""

    def entities(self, split: Dataset) -> list[list[str]] | None:
        """Per row, the strings the target copies from the source (the ``entity_copy`` metric); None: unknown."""
        return None

    # ---- tokenizer (checkpointed) -------------------------------------------------------------
    def prepare(self, dataset: DatasetDict) -> DatasetDict:
        if self.max_validation_items is not None and "validation" in dataset:
            keep = min(len(dataset["validation"]), self.max_validation_items)
            dataset["validation"] = dataset["validation"].select(range(keep))
        if self.tokenizer is None:
            if "train" not in dataset:
                raise ValueError(
                    f"dataset {self.origin} has no 'train' split to train the tokenizer on; evaluate a checkpoint "
                    "(eval.py ckpt_path=...), which brings its own"
                )
            train = dataset["train"]
            texts = self.source_texts(train) + self.target_texts(train)
            self.tokenizer = TextTokenizer.train(
                texts, vocab_size=self.vocab_size, model=self.tokenizer_model, prefix_space=self.tokenizer_prefix_space
            )
            log.info("trained a %s tokenizer on %d training texts: %d ids", self.tokenizer_model, len(texts),
                     self.tokenizer.vocab_size)
        return dataset

    # ---- splits and batches --------------------------------------------------------------------
    def wrap_split(self, split: Dataset, name: str) -> TextPairs:
        if self.tokenizer is None:
            raise RuntimeError("the tokenizer is neither trained nor restored; call setup() first")
        sources, targets = self.source_texts(split), self.target_texts(split)
        source_ids = self.tokenizer.encode_batch(sources, add_eos=True)
        target_ids = self.tokenizer.encode_batch(targets, add_eos=True)
        for kind, ids, limit in (("source", source_ids, self.max_source_len), ("target", target_ids, self.max_target_len)):
            cut = sum(len(i) > limit for i in ids)
            if cut:
                log.info("split '%s': %d of %d %s texts are longer than data.max_%s_len=%d tokens and are truncated",
                         name, cut, len(ids), kind, kind, limit)
        return TextPairs(
            sources=sources,
            targets=targets,
            source_ids=[_truncate(i, self.max_source_len, self.tokenizer.eos_id) for i in source_ids],
            target_ids=[_truncate(i, self.max_target_len, self.tokenizer.eos_id) for i in target_ids],
            entities=self.entities(split),
        )

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Items -> padded ids: source (B, S), decoder input BOS + target (B, T), labels target + EOS (B, T)."""
        assert self.tokenizer is not None
        pad, bos = self.tokenizer.pad_id, self.tokenizer.bos_id
        sources = _pad([item["source_ids"] for item in items], pad)  # (B, S)
        targets = [item["target_ids"] for item in items]  # each ends in EOS
        decoder_input = _pad([[bos] + ids[:-1] for ids in targets], pad)  # (B, T)
        labels = _pad(targets, IGNORE_INDEX)  # (B, T)
        entities = [item["entities"] for item in items]
        return {
            "source_tokens": sources,
            "decoder_input": decoder_input,
            "labels": labels,
            "index": torch.tensor([item["index"] for item in items]),  # (B,) row in the split
            "sources": [item["source"] for item in items],
            "references": [item["target"] for item in items],
            "entities": None if any(e is None for e in entities) else entities,
            "tokenizer": self.tokenizer,
        }


def _truncate(ids: list[int], limit: int, eos_id: int) -> list[int]:
    """Cut to `limit` ids, keeping EOS last."""
    return ids if len(ids) <= limit else ids[: limit - 1] + [eos_id]


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    """Ragged id lists -> (B, max length) long, right-padded with `value`."""
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for b, row in enumerate(rows):
        out[b, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out
