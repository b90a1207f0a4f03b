"""Mixin of datamodules that tokenize whole splits with a `TextTokenizer` trained on their training split
(translation, summarization, extractive QA)."""

from __future__ import annotations

import json
from typing import Any

from datasets import Dataset
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import Sampler

from attnlab.data.sampler import LengthBucketBatchSampler
from attnlab.data.tokenizer import TextTokenizer


class TokenizedSplits:
    """What such datamodules share (put it before `HFDataModule` in the bases):

    - the tokenizer (``self.tokenizer``) travels in the datamodule's state, so in every checkpoint, and a
      checkpoint's tokenizer wins over a freshly trained one; a datamodule already set up re-encodes its
      splits with it;
    - `wrap_split` tokenizes a whole split at once, so one raw row is preprocessed as a split of one;
    - with ``self.max_tokens`` set, training batches group items of similar ``dataset.lengths()`` under that
      padded-token budget (`LengthBucketBatchSampler`, at most ``batch_size`` items, lengths rounded to
      ``bucket_width``).
    """

    tokenizer: TextTokenizer | None
    max_tokens: int | None
    bucket_width: int = 4

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()  # type: ignore[misc]
        if self.tokenizer is not None:
            state["tokenizer"] = self.tokenizer.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)  # type: ignore[misc]
        if "tokenizer" not in state_dict:
            return
        restored = TextTokenizer.from_state_dict(state_dict["tokenizer"])
        changed = self.tokenizer is None or json.dumps(self.tokenizer.state_dict()) != json.dumps(restored.state_dict())
        self.tokenizer = restored
        if changed and self.raw_splits:  # set up already (a resumed fit): re-encode with the checkpoint's ids
            self.splits = {name: self.wrap_split(split, name) for name, split in self.raw_splits.items()}

    def preprocess(self, row: dict[str, Any], *, train: bool) -> dict[str, Any]:
        """One raw row -> an item (the splits are tokenized as a whole in `wrap_split`)."""
        return self.wrap_split(Dataset.from_list([row]), "row")[0]

    def batch_sampler(
        self, split_name: str, dataset: TorchDataset, *, shuffle: bool, num_replicas: int = 1, rank: int = 0
    ) -> Sampler[list[int]] | None:
        if self.max_tokens is None or split_name != "train" or not hasattr(dataset, "lengths"):
            return None
        return LengthBucketBatchSampler(
            dataset.lengths(), max_tokens=self.max_tokens, batch_size=self.batch_size, shuffle=shuffle,
            seed=self.seed, bucket_width=self.bucket_width, num_replicas=num_replicas, rank=rank,
        )
