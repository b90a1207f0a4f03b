"""Model-agnostic autoregressive generation: greedy and beam search over a step function.

A model takes part through one callable and, optionally, a cache::

    step(prefix: LongTensor (N, t), cache) -> logits or log-probs (N, V)

``prefix`` holds every row's tokens so far, BOS first (t = 1 on the first call). A model with a KV cache
(e.g. `TransformerDecoder` with a `DecoderCache`) reads only ``prefix[:, -1:]``, the token the cache has
not seen; a model without one may read the whole prefix. The output is normalised with ``log_softmax``
here, so raw logits and log-probabilities both work. Rows are ``N = batch_size`` for greedy search and
``N = batch_size * beam_size`` for beam search, beam-major per item (row ``b * K + k`` is beam k of item
b): expand per-item inputs such as the encoder memory with ``repeat_interleave(beam_size, dim=0)``.
Beam search calls ``cache.reorder(indices)`` (in place) after each step so row i continues the
hypothesis that was row ``indices[i]``.

Example with a decoder (``embed`` maps token ids to (N, 1, D), ``lm_head`` maps D to V)::

    beams = config.rows_per_item
    memory_k, mask_k = memory.repeat_interleave(beams, 0), src_mask.repeat_interleave(beams, 0)

    def step(prefix, cache):
        hidden = decoder(embed(prefix[:, -1:]), memory_k, memory_mask=mask_k, cache=cache)  # (N, 1, D)
        return lm_head(hidden[:, -1])  # (N, V)

    sequences, scores = generate(step, config, bos_id=bos, eos_id=eos, pad_id=pad, batch_size=B,
                                 cache=decoder.new_cache(), device=memory.device)

Returned sequences hold the generated tokens without BOS, EOS included when it was produced, then
``pad_id``; their width is the longest returned hypothesis (at most ``max_length``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

StepFn = Callable[[Tensor, Any], Tensor]  # (prefix (N, t) long, cache) -> logits or log-probs (N, V)
Strategy = Literal["greedy", "beam"]
STRATEGIES: tuple[str, ...] = ("greedy", "beam")


class ReorderableCache(Protocol):
    """What beam search needs of a cache: keep rows `indices` (N,) long in that order, in place."""

    def reorder(self, indices: Tensor) -> Any: ...


def gnmt_length_penalty(length: int | Tensor, alpha: float) -> float | Tensor:
    """GNMT length penalty lp(Y) = ((5 + |Y|) / 6) ** alpha (Wu et al., 2016).

    Beam hypotheses are ranked by log P(Y) / lp(Y), |Y| counting generated tokens (EOS included). As
    log P(Y) <= 0 falls with every token, alpha = 0 ranks by raw log-probability and favours short
    outputs; alpha > 0 divides longer outputs by more, offsetting that (alpha = 1 is close to per-token
    averaging); alpha < 0 favours short outputs further.
    """
    return ((5 + length) / 6) ** alpha


@dataclass
class GenerationConfig:
    """Decoding settings of a generation head; a task config sets them under ``generation:`` (Hydra
    ``_target_: attnlab.backbones.GenerationConfig``), and validation and test use the same object.

    Args:
        strategy: ``greedy`` (argmax each step) or ``beam``.
        beam_size: hypotheses kept per item (beam only); the step function then sees batch * beam_size rows.
        max_length: most generated tokens (EOS included, BOS not).
        min_length: EOS is forbidden until this many tokens are generated.
        length_penalty: GNMT alpha of `gnmt_length_penalty` (beam only); 0 ranks by raw log-probability.
        num_return_sequences: best hypotheses returned per item (beam only, at most beam_size).
        no_repeat_ngram_size: n > 0 forbids any token that would repeat an n-gram of the output so far
            (fairseq's and HF's ``no_repeat_ngram_size``; stops loops such as "Lion Lion Lion"); 0: off.
    """

    strategy: Strategy = "greedy"
    beam_size: int = 4
    max_length: int = 64
    min_length: int = 0
    length_penalty: float = 1.0
    num_return_sequences: int = 1
    no_repeat_ngram_size: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"generation.strategy='{self.strategy}' is unknown; choose one of {', '.join(STRATEGIES)}"
            )
        if self.beam_size < 1:
            raise ValueError(f"generation.beam_size ({self.beam_size}) must be >= 1")
        _check_lengths(self.max_length, self.min_length, prefix="generation.")
        _check_ngram(self.no_repeat_ngram_size, prefix="generation.")
        if self.strategy == "greedy" and self.num_return_sequences != 1:
            raise ValueError(
                f"generation.num_return_sequences ({self.num_return_sequences}) needs generation.strategy=beam; "
                "greedy search returns one sequence"
            )
        if not 1 <= self.num_return_sequences <= self.beam_size:
            raise ValueError(
                f"generation.num_return_sequences ({self.num_return_sequences}) must be in 1..generation.beam_size "
                f"({self.beam_size})"
            )

    @property
    def rows_per_item(self) -> int:
        """Rows the step function sees per batch item: beam_size for beam search, else 1."""
        return self.beam_size if self.strategy == "beam" else 1


def generate(
    step: StepFn,
    config: GenerationConfig,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    batch_size: int,
    cache: Any = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Run the search `config.strategy` names; returns (sequences (B, L) long, scores (B,)), or
    (B, n, L) and (B, n) for beam search with ``num_return_sequences = n > 1``."""
    if config.strategy == "greedy":
        return greedy_search(
            step,
            bos_id=bos_id,
            eos_id=eos_id,
            pad_id=pad_id,
            max_length=config.max_length,
            batch_size=batch_size,
            cache=cache,
            min_length=config.min_length,
            no_repeat_ngram_size=config.no_repeat_ngram_size,
            device=device,
        )
    return beam_search(
        step,
        bos_id=bos_id,
        eos_id=eos_id,
        pad_id=pad_id,
        beam_size=config.beam_size,
        max_length=config.max_length,
        batch_size=batch_size,
        cache=cache,
        length_penalty=config.length_penalty,
        min_length=config.min_length,
        num_return_sequences=config.num_return_sequences,
        no_repeat_ngram_size=config.no_repeat_ngram_size,
        device=device,
    )


@torch.no_grad()
def greedy_search(
    step: StepFn,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_length: int,
    batch_size: int,
    cache: Any = None,
    min_length: int = 0,
    no_repeat_ngram_size: int = 0,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Append the most likely token to every row until it emits EOS or `max_length` tokens exist.

    Args:
        step: ``(prefix (B, t) long, cache) -> (B, V)`` logits or log-probs; finished rows keep being fed
            (their new tokens are `pad_id`) until every row is done.
        max_length: most generated tokens per row (EOS included).
        min_length: EOS is forbidden before this many tokens.
        no_repeat_ngram_size: n > 0 forbids tokens that would repeat an n-gram of the row; 0: off.
        device: where the token tensors live (the model's device); default CPU.

    Returns:
        sequences (B, L) long, L <= max_length: generated tokens, EOS, then `pad_id`;
        scores (B,): summed log-probabilities of each row's generated tokens (EOS included).
    """
    _check_lengths(max_length, min_length)
    _check_ngram(no_repeat_ngram_size)
    _check_batch(batch_size)
    device = torch.device("cpu") if device is None else torch.device(device)
    prefix = torch.full((batch_size, 1), bos_id, dtype=torch.long, device=device)  # (B, 1)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)  # (B,)
    scores: Tensor | None = None
    for t in range(max_length):
        log_probs = _log_probs(step(prefix, cache), batch_size, eos_id)  # (B, V)
        if t + 1 < min_length:
            log_probs[:, eos_id] = -math.inf
        _ban_repeated_ngrams(log_probs, prefix[:, 1:], no_repeat_ngram_size)
        token_score, token = log_probs.max(dim=-1)  # (B,), (B,)
        token_score = token_score.masked_fill(finished, 0.0)
        scores = token_score if scores is None else scores + token_score
        token = token.masked_fill(finished, pad_id)
        finished = finished | (token == eos_id)
        prefix = torch.cat([prefix, token[:, None]], dim=1)  # (B, t + 2)
        if bool(finished.all()):
            break
    assert scores is not None  # max_length >= 1
    return prefix[:, 1:], scores


@torch.no_grad()
def beam_search(
    step: StepFn,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    beam_size: int,
    max_length: int,
    batch_size: int,
    cache: ReorderableCache | None = None,
    length_penalty: float = 1.0,
    min_length: int = 0,
    num_return_sequences: int = 1,
    no_repeat_ngram_size: int = 0,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Beam search over ``N = batch_size * beam_size`` rows, vectorised over items and beams.

    Each step scores all K * V extensions of an item's K live beams by summed log-probability. An
    extension ending in EOS is finished if it ranks among the item's top K extensions (so it takes a
    beam's place, as in fairseq); the best K extensions not ending in EOS become the live beams. Finished
    hypotheses stop growing and enter the item's pool of K, ranked by log P / `gnmt_length_penalty`;
    at `max_length` the live beams are finished as they are. An item stops once its pool holds K
    hypotheses (its live beams are dropped), and the search ends when every item has stopped. With
    beam_size = 1 this is greedy search.

    Args:
        step: ``(prefix (N, t) long, cache) -> (N, V)`` logits or log-probs; row ``b * K + k`` is beam k
            of item b. Per-item inputs must be expanded to N rows (``repeat_interleave(beam_size, 0)``).
        cache: reordered in place after each step with ``cache.reorder(indices (N,))``; None for a
            cacheless step.
        beam_size: K, beams per item.
        max_length: most generated tokens per hypothesis (EOS included, BOS not).
        length_penalty: GNMT alpha; 0 ranks finished hypotheses by raw log-probability.
        min_length: EOS is forbidden before this many tokens.
        num_return_sequences: n best hypotheses to return per item (1..beam_size).
        no_repeat_ngram_size: n > 0 forbids tokens that would repeat an n-gram of the hypothesis; 0: off.
        device: where the token tensors live (the model's device); default CPU.

    Returns:
        n = 1: sequences (B, L) long and scores (B,); n > 1: (B, n, L) and (B, n), best first. L <=
        max_length is the longest returned hypothesis; tokens after EOS are `pad_id`. Scores are
        log P / lp(length).
    """
    _check_lengths(max_length, min_length)
    _check_ngram(no_repeat_ngram_size)
    _check_batch(batch_size)
    if beam_size < 1:
        raise ValueError(f"beam_size ({beam_size}) must be >= 1")
    if not 1 <= num_return_sequences <= beam_size:
        raise ValueError(
            f"num_return_sequences ({num_return_sequences}) must be in 1..beam_size ({beam_size})"
        )
    device = torch.device("cpu") if device is None else torch.device(device)
    B, K, L = batch_size, beam_size, max_length
    N = B * K
    first_row = torch.arange(B, device=device)[:, None] * K  # (B, 1) row of each item's beam 0
    bos = torch.full((N, 1), bos_id, dtype=torch.long, device=device)  # (N, 1)
    live_tokens = torch.full((B, K, L), pad_id, dtype=torch.long, device=device)  # live beams' tokens
    pool_tokens = torch.full((B, K, L), pad_id, dtype=torch.long, device=device)  # finished, best first
    pool_lengths = torch.zeros(B, K, dtype=torch.long, device=device)  # (B, K)
    done = torch.zeros(B, dtype=torch.bool, device=device)  # (B,) pool full: the item has stopped
    live_scores = pool_scores = torch.empty(0)  # (B, K) each, created with the model's dtype below

    for t in range(L):
        prefix = torch.cat([bos, live_tokens.view(N, L)[:, :t]], dim=1)  # (N, t + 1)
        log_probs = _log_probs(step(prefix, cache), N, eos_id)  # (N, V)
        vocab = log_probs.shape[-1]
        if t == 0:  # every beam starts from BOS: keep one of them alive so the K beams differ
            live_scores = log_probs.new_full((B, K), -math.inf)
            live_scores[:, 0] = 0.0
            pool_scores = log_probs.new_full((B, K), -math.inf)
        if t + 1 < min_length:
            log_probs[:, eos_id] = -math.inf
        _ban_repeated_ngrams(log_probs, prefix[:, 1:], no_repeat_ngram_size)
        candidates = (live_scores.view(N, 1) + log_probs).view(B, K * vocab)  # (B, K*V), beam-major
        # the top 2K hold at least K extensions that do not end in EOS (each beam has one EOS extension)
        top_scores, top_index = candidates.topk(min(2 * K, K * vocab), dim=1)  # (B, C), best first
        top_beam, top_token = top_index // vocab, top_index % vocab  # (B, C)
        ends = top_token == eos_id  # (B, C)

        # finished now: EOS extensions among the item's top K
        new_tokens = _gather_beams(live_tokens, top_beam[:, :K])  # (B, K, L)
        new_tokens[..., t] = eos_id
        accept = ends[:, :K] & top_scores[:, :K].isfinite() & ~done[:, None]  # (B, K)
        finished = [(new_tokens, top_scores[:, :K], accept, t + 1)]

        # live: the best K extensions that do not end in EOS
        live_candidates = top_scores.masked_fill(ends, -math.inf)
        live_scores, pick = live_candidates.topk(K, dim=1)  # (B, K)
        live_beam, live_token = top_beam.gather(1, pick), top_token.gather(1, pick)  # (B, K)
        live_tokens = _gather_beams(live_tokens, live_beam)  # (B, K, L)
        live_tokens[..., t] = live_token
        last = t + 1 == L
        if last:  # out of length: the live beams finish without EOS
            finished.append((live_tokens, live_scores, live_scores.isfinite() & ~done[:, None], L))

        pool_tokens, pool_scores, pool_lengths = _merge_pool(
            pool_tokens, pool_scores, pool_lengths, finished, length_penalty, K
        )
        done = done | pool_scores[:, -1].isfinite()  # K finished hypotheses
        live_scores = live_scores.masked_fill(done[:, None], -math.inf)  # stopped items grow no further
        if last or bool((done | ~live_scores.isfinite().any(dim=1)).all()):
            break
        if cache is not None:
            cache.reorder((first_row + live_beam).view(N))  # row b*K + k continues row b*K + live_beam[b, k]

    n = num_return_sequences
    scores, lengths = pool_scores[:, :n], pool_lengths[:, :n]  # (B, n)
    width = int(lengths.max()) if lengths.numel() else 0
    sequences = pool_tokens[:, :n, :width]  # (B, n, L')
    return (sequences[:, 0], scores[:, 0]) if n == 1 else (sequences, scores)


def _gather_beams(tokens: Tensor, beams: Tensor) -> Tensor:
    """tokens (B, K, L) of beams (B, C) long -> (B, C, L), a new tensor."""
    return tokens.gather(1, beams[..., None].expand(-1, -1, tokens.shape[-1]))


def _merge_pool(
    pool_tokens: Tensor,
    pool_scores: Tensor,
    pool_lengths: Tensor,
    finished: list[tuple[Tensor, Tensor, Tensor, int]],
    alpha: float,
    size: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Keep the `size` best of the pool (B, K) and the newly finished (tokens (B, C, L), raw log-probs
    (B, C), accept mask (B, C), length), ranked by log P / lp(length)."""
    tokens, scores, lengths = [pool_tokens], [pool_scores], [pool_lengths]
    for new_tokens, raw, accept, length in finished:
        normalised = (raw / gnmt_length_penalty(length, alpha)).masked_fill(~accept, -math.inf)  # (B, C)
        tokens.append(new_tokens)
        scores.append(normalised)
        lengths.append(torch.full_like(pool_lengths[:, :1], length).expand_as(normalised))
    all_scores = torch.cat(scores, dim=1)  # (B, K + sum C)
    best_scores, keep = all_scores.topk(size, dim=1)  # (B, K), best first
    best_tokens = _gather_beams(torch.cat(tokens, dim=1), keep)  # (B, K, L)
    best_lengths = torch.cat(lengths, dim=1).gather(1, keep)  # (B, K)
    return best_tokens, best_scores, best_lengths


def _log_probs(output: Tensor, rows: int, eos_id: int) -> Tensor:
    """log_softmax of the step's (rows, V) output, in float32 or float64; checks shape and eos_id."""
    if output.dim() != 2 or output.shape[0] != rows:
        raise ValueError(
            f"step must return (rows, vocab) = ({rows}, V) logits or log-probs, got {tuple(output.shape)}; "
            "return the last position's scores, for every row (beam search: batch_size * beam_size rows)"
        )
    if not 0 <= eos_id < output.shape[1]:
        raise ValueError(f"eos_id ({eos_id}) is outside the step's vocabulary of {output.shape[1]} tokens")
    if output.dtype not in (torch.float32, torch.float64):
        output = output.float()  # half precision would round the summed scores
    return torch.log_softmax(output, dim=-1)  # (rows, V)


def _check_lengths(max_length: int, min_length: int, prefix: str = "") -> None:
    if max_length < 1:
        raise ValueError(f"{prefix}max_length ({max_length}) must be >= 1 (generated tokens, EOS included)")
    if not 0 <= min_length <= max_length:
        raise ValueError(f"{prefix}min_length ({min_length}) must be in 0..{prefix}max_length ({max_length})")


def _ban_repeated_ngrams(log_probs: Tensor, generated: Tensor, size: int) -> None:
    """In place: -inf for each row's tokens that would complete an n-gram (n = size) the row already holds.

    log_probs (N, V); generated (N, t) tokens so far, BOS excluded. size 0: nothing is banned.
    """
    length = generated.shape[1]
    if size <= 0 or length < size:  # no complete n-gram yet
        return
    if size == 1:
        log_probs.scatter_(1, generated, -math.inf)
        return
    ngrams = generated.unfold(1, size, 1)  # (N, W, n): every n-gram so far
    tail = generated[:, length - size + 1 :]  # (N, n - 1): the n-gram the next token would complete
    repeats = (ngrams[..., :-1] == tail[:, None, :]).all(dim=-1)  # (N, W)
    banned = torch.zeros_like(log_probs).scatter_add_(1, ngrams[..., -1], repeats.to(log_probs.dtype))  # (N, V)
    log_probs.masked_fill_(banned > 0, -math.inf)


def _check_ngram(size: int, prefix: str = "") -> None:
    if size < 0:
        raise ValueError(f"{prefix}no_repeat_ngram_size ({size}) must be >= 0 (0: off)")


def _check_batch(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size ({batch_size}) must be >= 1")
