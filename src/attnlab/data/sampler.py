"""Samplers whose order depends only on (seed, epoch), so resumed runs see the same data order: a shuffling
index sampler and a length-bucketing, token-budget batch sampler that shards itself across DDP ranks."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DistributedSampler, Sampler

log = logging.getLogger(__name__)


class EpochSeededSampler(DistributedSampler):
    """One process's indices of one epoch: a permutation of range(length) drawn from seed + epoch (or
    the plain order), dealt to the data-parallel ranks; resumable mid-epoch.

    The order depends only on (seed, epoch), so a resumed run reads the same data; `resume_at` makes
    the first iteration of the interrupted epoch skip the samples this rank already trained on, so a
    run resumed from ``on_exception.ckpt`` continues exactly where it stopped. It subclasses
    `DistributedSampler` only so that Lightning leaves it in place instead of wrapping it (it shards
    itself; no process group is needed to build it).

    Args:
        length: dataset size N.
        seed: base seed of the shuffle.
        shuffle: random order per epoch (training) or range(N) (evaluation).
        num_replicas / rank: data-parallel world size and this process's rank (Lightning calls
            `set_epoch` on it before every epoch).
        even: pad the order by repeating its first indices so every rank gets the same number of
            samples (training: DDP's gradient all-reduce must stay in step). ``False`` deals each index
            to exactly one rank (evaluation: every item counted once, ranks may differ by one sample).
    """

    def __init__(
        self, length: int, *, seed: int = 0, shuffle: bool = True, num_replicas: int = 1, rank: int = 0, even: bool = True
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank} must be in [0, num_replicas={num_replicas})")
        # DistributedSampler.__init__ is not called: it wants a dataset and an initialised process group
        self.length, self.seed, self.shuffle, self.epoch = length, seed, shuffle, 0
        self.num_replicas, self.rank, self.even = num_replicas, rank, even
        self.num_samples = math.ceil(length / num_replicas) if even else len(range(rank, length, num_replicas))
        self.total_size = self.num_samples * num_replicas if even else length
        self._resume: tuple[int, int] | None = None  # (epoch, samples of this rank already consumed)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, samples: int) -> None:
        """The next iteration over `epoch` starts after this rank's first `samples` indices (once)."""
        self._resume = (epoch, samples)

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            order = list(range(self.length))
        if self.even and self.total_size > self.length:  # repeat the first indices (DistributedSampler's rule)
            order = (order * math.ceil(self.total_size / max(1, self.length)))[: self.total_size]
        mine = order[self.rank : self.total_size : self.num_replicas]
        skip = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            skip, self._resume = self._resume[1], None
        return iter(mine[skip:])

    def __len__(self) -> int:
        return self.num_samples  # the whole epoch: Lightning counts the resumed epoch's batches from its progress


class LengthBucketBatchSampler(Sampler[list[int]]):
    """Batches of items of similar length under a token budget, epoch-seeded, sharded across DDP ranks.

    Every epoch the items are sorted by length (equal lengths in a random order drawn from seed + epoch)
    and cut, in that order, into batches that respect the budget; then the batch order is shuffled. A
    batch holds items of nearly one length, so little of it is padding, and the cut points depend only on
    the sorted lengths: every epoch has the same number of batches (Lightning counts them once per fit).

    Cost of a batch = its longest item x its number of items (the size of its padded (B, L) tensor).
    Lengths are rounded up to a multiple of ``bucket_width`` first, so items within one width mix freely
    across batches from epoch to epoch; the budget holds for the true lengths too. An item longer than
    ``max_tokens`` goes in a batch of its own (logged once at construction); truncate in `preprocess`
    to avoid it.

    DDP: Lightning cannot put its DistributedSampler inside a custom batch sampler, so this one shards
    itself. All ranks build the same global batch list (same lengths, seed, epoch) and rank r takes
    batches r, r + R, r + 2R, ... With ``even_batches`` (default) the list is first padded by repeating
    its first batches until its length is a multiple of R, so every rank yields the same number of
    batches (DDP's collectives stay in step); at most R - 1 batches are seen twice per epoch. For
    evaluation this counts those items twice in the metrics, as Lightning's own DistributedSampler does;
    pass ``even_batches=False`` where ranks need not stay in step (prediction).

    Args:
        lengths: (N,) length of each item of the dataset (tokens, frames), ints >= 0; 0 costs as 1.
        max_tokens: budget of a batch (longest item x items); None for no budget.
        batch_size: most items in a batch; None for no limit. At least one of the two is needed.
        shuffle: training order (epoch-seeded random ties and batch order); False gives a fixed order,
            longest batches first (an out-of-memory error shows on the first batch).
        seed: base seed; the order depends only on (seed, epoch), so a resumed run repeats it.
        bucket_width: lengths are rounded up to a multiple of this before batching.
        num_replicas / rank: data-parallel world size and this process's rank in it.
        even_batches: pad the batch list so that every rank yields the same number of batches.

    Attributes:
        sampler: the `EpochSeededSampler` carrying the epoch (shuffle only, else None). Lightning calls
            ``dataloader.batch_sampler.sampler.set_epoch(epoch)`` before each epoch; its permutation is
            the one that orders equal lengths.
        keys: (N,) the lengths batching uses (at least 1, rounded up to ``bucket_width``).
        sizes: items per batch, in length order; fixed at construction, so ``len(sizes)`` batches per epoch.

    Yields lists of dataset indices, (B_i,) each.
    """

    def __init__(
        self,
        lengths: Sequence[int] | torch.Tensor,
        *,
        max_tokens: int | None = None,
        batch_size: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        bucket_width: int = 1,
        num_replicas: int = 1,
        rank: int = 0,
        even_batches: bool = True,
    ) -> None:
        if max_tokens is None and batch_size is None:
            raise ValueError(
                "max_tokens and batch_size are both None; give a padded-token budget and/or a batch size"
            )
        for name, value in (("max_tokens", max_tokens), ("batch_size", batch_size)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}={value} must be a positive integer (or None)")
        if not isinstance(bucket_width, int) or bucket_width < 1:
            raise ValueError(f"bucket_width={bucket_width} must be a positive integer (1: exact lengths)")
        if not isinstance(num_replicas, int) or num_replicas < 1:
            raise ValueError(
                f"num_replicas={num_replicas} must be a positive integer (data-parallel world size)"
            )
        if not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank} must be in [0, num_replicas={num_replicas})")
        lengths = torch.as_tensor(lengths)
        lengths = lengths.long() if lengths.numel() == 0 else lengths  # [] is float to torch
        if (
            lengths.dim() != 1
            or lengths.is_floating_point()
            or lengths.is_complex()
            or bool((lengths < 0).any())
        ):
            raise ValueError(
                f"lengths must be a 1-D sequence of ints >= 0, got {lengths.dtype} of shape {tuple(lengths.shape)}"
            )
        self.max_tokens, self.batch_size, self.shuffle, self.seed = max_tokens, batch_size, shuffle, seed
        self.bucket_width, self.even_batches = bucket_width, even_batches
        self.num_replicas, self.rank = num_replicas, rank
        self.sampler = EpochSeededSampler(len(lengths), seed=seed) if shuffle else None
        self._resume: tuple[int, int] | None = None  # (epoch, batches of this rank already consumed)
        # cost lengths: at least 1, rounded up to the bucket width
        self.keys = (lengths.long().clamp(min=1) + bucket_width - 1) // bucket_width * bucket_width  # (N,)
        self.sizes = self._cut(self.keys.sort().values.tolist())  # items per batch, in sorted order
        if max_tokens is not None and (over := int((self.keys > max_tokens).sum())):
            log.warning(
                "%d item(s) are longer than max_tokens=%d (longest %d); each goes in a batch of its own. "
                "Truncate them in preprocess or raise max_tokens.",
                over,
                max_tokens,
                int(lengths.max()),
            )

    def _cut(self, sorted_keys: list[int]) -> list[int]:
        """Greedy cut of the ascending keys into batches: sizes (number of items) of consecutive batches."""
        sizes, count = [], 0
        for key in sorted_keys:  # ascending: `key` is the longest of the batch so far
            fits_budget = self.max_tokens is None or key * (count + 1) <= self.max_tokens
            fits_size = self.batch_size is None or count + 1 <= self.batch_size
            if count and not (fits_budget and fits_size):
                sizes.append(count)
                count = 0
            count += 1
        return sizes + [count] if count else sizes

    @property
    def epoch(self) -> int:
        return self.sampler.epoch if self.sampler is not None else 0

    def set_epoch(self, epoch: int) -> None:
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)

    def global_batches(self) -> list[list[int]]:
        """This epoch's batches of all ranks, in order, before padding and sharding."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            ties = torch.randperm(len(self.keys), generator=generator)  # what `self.sampler` yields
            order = ties[torch.sort(self.keys[ties], stable=True).indices]  # (N,) by length, ties random
        else:
            order = torch.sort(self.keys, stable=True).indices  # (N,) by length, ties by index
        batches = [chunk.tolist() for chunk in torch.split(order, self.sizes)] if self.sizes else []
        if self.shuffle:
            return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        return batches[::-1]  # longest first

    def resume_at(self, epoch: int, batches: int) -> None:
        """The next iteration over `epoch` starts after this rank's first `batches` batches (once)."""
        self._resume = (epoch, batches)

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.global_batches()
        if self.even_batches and batches:
            total = len(self) * self.num_replicas
            batches = (batches * math.ceil(total / len(batches)))[:total]  # pad: repeat from the start
        mine = batches[self.rank :: self.num_replicas]
        skip = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            skip, self._resume = self._resume[1], None
        return iter(mine[skip:])

    def __len__(self) -> int:
        if self.even_batches:
            return math.ceil(len(self.sizes) / self.num_replicas)
        return len(range(self.rank, len(self.sizes), self.num_replicas))
