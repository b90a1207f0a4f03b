"""Sequence-to-sequence head: an autoregressive decoder over the encoder's states, trained with teacher
forcing and scored by generating text (translation, summarization).

The decoder is a factory (Hydra ``_partial_``) completed with ``dim=``: `TransformerDecoder` (causal
self-attention + cross-attention, KV cache) or `AttentiveGRUDecoder` (Bahdanau 2014); both take
``(tokens, memory, memory_mask=, cache=, need_weights=)`` and build a cache with ``new_cache()``.

Batch fields read (see `attnlab.data.Seq2SeqDataModule.collate`):
    decoder_input (B, T) long   BOS + target ids (teacher forcing), pad 0; absent when predicting raw text
    labels (B, T) long          target ids + EOS, -100 where padded
    references list[str]        target texts (metrics, records)
    sources list[str]           source texts (records)
    entities list[list[str]] | None   per item, what the reference copies (entity_copy)
    tokenizer                   the `TextTokenizer` that made the ids (decodes generated ids)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection

from attnlab.backbones.generation import GenerationConfig, generate
from attnlab.training.head import TaskHead
from attnlab.training.text_metrics import build_text_metric

Continuation = Literal["any", "tracked"]


class Seq2SeqHead(TaskHead):
    """Decoder + tied output projection over the encoder output; generation scores val / test.

    Args:
        dim: width D of the encoder states (and of the decoder).
        vocab_size: ids V of the shared source/target vocabulary.
        decoder: factory ``(dim=) -> decoder`` (see the module docstring).
        generation: decoding settings, the same for validation, test and predict.
        metrics: names from `attnlab.training.text_metrics.TEXT_METRICS`, logged as {stage}/{task}/{name}.
        label_smoothing: of the token cross-entropy.
        tie_source_embedding: share the adapter's token table (`TokenEmbed.embedding`, one vocabulary for
            source and target); the output projection is always tied to the target embedding.
        copy: add a pointer (See et al. 2017, "pointer-generator"): a single-head attention of each decoder
            state over the encoder states gives a copy distribution over the source tokens; a learned gate
            p_gen mixes it with the vocabulary distribution, P(w) = p_gen P_vocab(w) + (1 - p_gen)
            sum_{j: x_j = w} a_j. Copying a name, subword by subword, is then one attention step away.
            The copy scores also get a learned bonus on source positions right after an occurrence of the
            token just emitted (a score-bias form of CopyNet's selective read, below), so once the first
            piece of a name is copied, the next pieces follow it in order.
        copy_continuation: where that bonus goes. ``any``: every position right after an occurrence of the
            emitted token, alike. ``tracked``: those positions weighted by where the pointer looked at the
            previous step (its attention before the bonus, a_{t-1, j-1}, normalised over them): after a
            frequent piece such as " the", the copy continues at the occurrence it was reading, not at all
            of them (CopyNet weights its selective read by the previous copy probabilities the same way).
        selective_read: with ``copy``, also feed the decoder what follows the token it just read in the
            source (CopyNet's selective read, Gu et al. 2016): its input at step t adds a projection of the
            mean encoder state over source positions j with x_{j-1} = y_{t-1}. The decoder then knows which
            piece continues a name it is copying, not only that it is copying one.
        source_key: batch field with the (B, S) source ids the pointer copies from (the adapter's input).
        pad_id / bos_id / eos_id: special ids of the tokenizer (`TextTokenizer`: 0 / 2 / 3).
    """

    metric_stages = ("val", "test")  # metrics come from generation: too slow to score every training step

    def __init__(
        self,
        *,
        dim: int,
        vocab_size: int,
        decoder: Callable[..., nn.Module],
        generation: GenerationConfig | None = None,
        metrics: Sequence[str] = ("bleu",),
        label_smoothing: float = 0.1,
        tie_source_embedding: bool = True,
        copy: bool = False,
        copy_continuation: Continuation = "any",
        selective_read: bool = False,
        source_key: str = "source_tokens",
        pad_id: int = 0,
        bos_id: int = 2,
        eos_id: int = 3,
    ) -> None:
        super().__init__()
        self.dim, self.vocab_size = dim, vocab_size
        self.decoder = decoder(dim=dim)
        self.generation = generation or GenerationConfig()
        self.metric_names = tuple(metrics)
        for name in self.metric_names:
            build_text_metric(name)  # unknown names fail at construction, not after the first epoch
        self.label_smoothing, self.tie_source_embedding = label_smoothing, tie_source_embedding
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        nn.init.normal_(self.embedding.weight, std=dim**-0.5)
        self.output_bias = nn.Parameter(torch.zeros(vocab_size))  # (V,)
        self.copy, self.source_key = copy, source_key
        if copy:
            self.copy_query = nn.Linear(dim, dim, bias=False)
            self.copy_key = nn.Linear(dim, dim, bias=False)
            self.copy_gate = nn.Linear(2 * dim, 1)
            self.copy_follow = nn.Parameter(torch.zeros(()))  # bonus for continuing a copied span
        if copy_continuation not in ("any", "tracked"):
            raise ValueError(f"head.copy_continuation='{copy_continuation}' is unknown; choose any or tracked")
        self.copy_continuation = copy_continuation
        if selective_read and not copy:
            raise ValueError("head.selective_read=true reads through the pointer's source ids: set head.copy=true too")
        self.selective_read = selective_read
        if selective_read:
            self.read_proj = nn.Linear(dim, dim, bias=False)
            nn.init.zeros_(self.read_proj.weight)  # starts as the plain decoder; training opens it

    def tie_to_adapter(self, adapter: nn.Module) -> None:
        """Share the adapter's token table: one embedding for source, target and output."""
        table = getattr(adapter, "embedding", None)
        if not self.tie_source_embedding or table is None:
            return
        if table.weight.shape != self.embedding.weight.shape:
            raise ValueError(
                f"cannot tie the adapter's embedding {tuple(table.weight.shape)} to the head's "
                f"{tuple(self.embedding.weight.shape)}; give both the same vocab_size, or set "
                "head.tie_source_embedding=false"
            )
        self.embedding = table

    # ---- decoding ------------------------------------------------------------------------------
    def embed(self, ids: Tensor) -> Tensor:
        """(B, T) ids -> (B, T, D) scaled embeddings (the decoder adds its own positions)."""
        return self.embedding(ids) * math.sqrt(self.dim)

    def decoder_inputs(
        self, ids: Tensor, memory: Tensor, memory_mask: Tensor, source_ids: Tensor | None
    ) -> Tensor:
        """(B, T) ids fed to the decoder -> (B, T, D) inputs: embeddings, plus with ``selective_read`` the
        projected mean encoder state of the source positions that follow each fed token."""
        inputs = self.embed(ids)
        if not self.selective_read:
            return inputs
        follows = _follows(self._checked_source(memory, source_ids), ids) & memory_mask[:, None, :]  # (B, T, S)
        weights = follows.float() / follows.sum(-1, keepdim=True).clamp_min(1)  # (B, T, S) mean over matches
        return inputs + self.read_proj(weights.to(memory.dtype) @ memory)  # (B, T, D)

    def _checked_source(self, memory: Tensor, source_ids: Tensor | None) -> Tensor:
        if source_ids is None or source_ids.shape != memory.shape[:2]:
            raise ValueError(
                f"the copy head needs batch['{self.source_key}'] as (B, S) = {tuple(memory.shape[:2])} source ids"
            )
        return source_ids

    def logits(self, hidden: Tensor) -> Tensor:
        """(..., D) decoder states -> (..., V) logits through the tied embedding."""
        return F.linear(hidden, self.embedding.weight, self.output_bias)

    def output_scores(
        self,
        states: Tensor,
        memory: Tensor,
        memory_mask: Tensor,
        source_ids: Tensor | None,
        previous_ids: Tensor | None = None,
        copy_keys: Tensor | None = None,
        previous_attention: Tensor | None = None,
    ) -> Tensor:
        """Decoder states (B, T, D) -> (B, T, V) scores: logits, or with ``copy`` the log-probabilities of the
        pointer-generator mixture (log_softmax leaves them unchanged, so the loss and the searches take
        either). ``previous_ids`` (B, T) are the tokens fed at each step (the continuation bonus);
        ``copy_keys`` is `copy_key(memory)` when a search computed it once. ``previous_attention`` (B, T, S):
        for ``copy_continuation=tracked``, the pointer's attention (softmax of `_pointer_scores`) at the step before
        each of the T steps; None derives it from the T states themselves (teacher forcing, full prefix)."""
        logits = self.logits(states)
        if not self.copy:
            return logits
        source_ids = self._checked_source(memory, source_ids)
        keys = self.copy_key(memory) if copy_keys is None else copy_keys  # (B, S, D)
        scores = self._pointer_scores(states, keys, memory_mask)  # (B, T, S) float, -inf off the source
        if previous_ids is not None:  # position j continues a copy if source j - 1 is the token just emitted
            follows = _follows(source_ids, previous_ids)  # (B, T, S)
            if self.copy_continuation == "any":
                bonus = follows.float()
            else:
                if previous_attention is None:  # step t's previous step is t - 1 of the same states; step 0 has none
                    previous_attention = F.pad(scores.softmax(-1)[:, :-1], (0, 0, 1, 0))
                bonus = _tracked(previous_attention.float(), follows)
            scores = scores + self.copy_follow * bonus
        attention = scores.softmax(-1)  # (B, T, S)
        context = attention.to(memory.dtype) @ memory  # (B, T, D)
        keep = torch.sigmoid(self.copy_gate(torch.cat([states, context], -1)).float())  # (B, T, 1) p_gen
        index = source_ids[:, None, :].expand(-1, states.shape[1], -1)  # (B, T, S)
        copied = torch.zeros_like(logits, dtype=torch.float32).scatter_add_(-1, index, attention)  # (B, T, V)
        probs = keep * logits.float().softmax(-1) + (1 - keep) * copied
        return probs.clamp_min(1e-10).log()

    def _pointer_scores(self, states: Tensor, keys: Tensor, memory_mask: Tensor) -> Tensor:
        """(B, T, D) states, (B, S, D) copy keys -> (B, T, S) float copy scores before any bonus, -inf off the source."""
        scores = self.copy_query(states) @ keys.transpose(1, 2) / math.sqrt(self.dim)
        return scores.float().masked_fill(~memory_mask[:, None, :], float("-inf"))

    def forward(self, hidden: Tensor, mask: Tensor | None, batch: dict[str, Any]) -> dict[str, Tensor]:
        """hidden (B, S, D) encoder states, mask (B, S) -> memory (+ teacher-forced scores (B, T, V))."""
        memory_mask = mask if mask is not None else hidden.new_ones(hidden.shape[:2], dtype=torch.bool)
        outputs = {"memory": hidden, "memory_mask": memory_mask}
        if self.copy:
            outputs["source_ids"] = batch[self.source_key]  # (B, S)
        if "decoder_input" in batch:
            target = batch["decoder_input"]  # (B, T)
            inputs = self.decoder_inputs(target, hidden, memory_mask, outputs.get("source_ids"))  # (B, T, D)
            states = self.decoder(inputs, hidden, memory_mask=memory_mask, padding_mask=target != self.pad_id)
            outputs["logits"] = self.output_scores(  # (B, T, V)
                states, hidden, memory_mask, outputs.get("source_ids"), previous_ids=target
            )
        return outputs

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> Tensor:
        logits, labels = outputs["logits"], batch["labels"]  # (B, T, V), (B, T) -100 = padding
        return F.cross_entropy(
            logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100, label_smoothing=self.label_smoothing
        )

    @torch.no_grad()
    def generate(
        self,
        memory: Tensor,
        memory_mask: Tensor,
        *,
        source_ids: Tensor | None = None,
        config: GenerationConfig | None = None,
        use_cache: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """Decode from the encoder states: (sequences (B, L) ids ending in EOS then pad, scores (B,)).

        ``source_ids`` (B, S) are needed by the ``copy`` head. ``use_cache=False`` re-runs the decoder over the
        whole prefix at every step (the reference the KV cache is checked and timed against).
        """
        config = config or self.generation
        rows = config.rows_per_item
        memory_rows = memory.repeat_interleave(rows, 0)  # (B * rows, S, D), beam-major per item
        mask_rows = memory_mask.repeat_interleave(rows, 0)  # (B * rows, S)
        source_rows = None if source_ids is None else source_ids.repeat_interleave(rows, 0)  # (B * rows, S)
        copy_keys = self.copy_key(memory_rows) if self.copy else None  # fixed for the whole search
        tracked = self.copy and self.copy_continuation == "tracked"

        def scores(states: Tensor, prefix: Tensor, previous: Tensor | None) -> Tensor:
            last = states[:, -1:]  # (N, 1, D): the step that predicts the next token
            return self.output_scores(
                last, memory_rows, mask_rows, source_rows, prefix[:, -1:], copy_keys, previous
            )[:, 0]

        def cached_step(prefix: Tensor, cache: _SearchCache) -> Tensor:
            inputs = self.decoder_inputs(prefix[:, -1:], memory_rows, mask_rows, source_rows)  # (N, 1, D)
            states = self.decoder(inputs, memory_rows, memory_mask=mask_rows, cache=cache.decoder)
            previous = cache.pointer
            if tracked:  # this step's pointer attention is the next step's "previous" (beam search reorders it)
                cache.pointer = self._pointer_scores(states, copy_keys, mask_rows).softmax(-1)  # (N, 1, S)
                if previous is None:  # the first step follows BOS: nothing was read before it
                    previous = torch.zeros_like(cache.pointer)
            return scores(states, prefix, previous)  # (N, V)

        def full_step(prefix: Tensor, cache: Any) -> Tensor:
            inputs = self.decoder_inputs(prefix, memory_rows, mask_rows, source_rows)  # (N, T, D)
            states = self.decoder(inputs, memory_rows, memory_mask=mask_rows)
            previous = None
            if tracked:
                previous = torch.zeros(states.shape[0], 1, memory_rows.shape[1], device=states.device)
                if states.shape[1] > 1:
                    previous = self._pointer_scores(states[:, -2:-1], copy_keys, mask_rows).softmax(-1)  # (N, 1, S)
            return scores(states, prefix, previous)  # (N, V)

        return generate(
            cached_step if use_cache else full_step,
            config,
            bos_id=self.bos_id,
            eos_id=self.eos_id,
            pad_id=self.pad_id,
            batch_size=memory.shape[0],
            cache=_SearchCache(self.decoder.new_cache()) if use_cache else None,
            device=memory.device,
        )

    def cross_attention(
        self, memory: Tensor, memory_mask: Tensor, generated: Tensor, source_ids: Tensor | None = None
    ) -> list[Tensor]:
        """Per decoder layer, the cross-attention (B, H, T, S) of target positions over source tokens while
        producing `generated` (B, T) (the decoder is causal, so one teacher-forced pass over BOS + the
        generated tokens gives exactly the weights generation used). ``source_ids`` (B, S): as in `generate`."""
        bos = torch.full_like(generated[:, :1], self.bos_id)
        inputs = torch.cat([bos, generated[:, :-1]], 1)  # (B, T): the token fed before each generated one
        _, weights = self.decoder(
            self.decoder_inputs(inputs, memory, memory_mask, source_ids),
            memory,
            memory_mask=memory_mask,
            padding_mask=inputs != self.pad_id,
            need_weights=True,
        )
        return weights

    def decode_texts(self, sequences: Tensor, batch: dict[str, Any]) -> list[str]:
        tokenizer = batch["tokenizer"]
        return [tokenizer.decode(row) for row in sequences.tolist()]

    # ---- metrics and records -------------------------------------------------------------------
    def build_metrics(self) -> MetricCollection:
        return MetricCollection({name: build_text_metric(name) for name in self.metric_names}, compute_groups=False)

    def update_metrics(self, metrics: MetricCollection, outputs: dict[str, Tensor], batch: dict[str, Any]) -> None:
        sequences, _ = self.generate(outputs["memory"], outputs["memory_mask"], source_ids=outputs.get("source_ids"))
        metrics.update(self.decode_texts(sequences, batch), batch["references"], batch.get("entities"))

    def predict(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> list[dict[str, Any]]:
        """One record per item: the generated text, its ids (attention maps), log-probability and reference."""
        sequences, scores = self.generate(outputs["memory"], outputs["memory_mask"], source_ids=outputs.get("source_ids"))
        if sequences.dim() == 3:  # num_return_sequences > 1: keep the best
            sequences, scores = sequences[:, 0], scores[:, 0]
        texts = self.decode_texts(sequences, batch)
        records = []
        for b, (text, ids, score) in enumerate(zip(texts, sequences.tolist(), scores.tolist())):
            reference = batch["references"][b]
            records.append({
                "index": int(batch["index"][b]),
                "source": batch["sources"][b],
                "prediction": text,
                "log_prob": round(float(score), 4),
                "reference": reference or None,
                "exact": (text.strip() == reference.strip()) if reference else None,
                "ids": [i for i in ids if i != self.pad_id],
            })
        return records


class _SearchCache:
    """What a cached search carries between steps: the decoder's KV / hidden-state cache and, for
    ``copy_continuation=tracked``, the pointer's last attention (N, 1, S); beam search reorders both."""

    def __init__(self, decoder_cache: Any) -> None:
        self.decoder, self.pointer = decoder_cache, None

    def reorder(self, indices: Tensor) -> None:
        self.decoder.reorder(indices)
        if self.pointer is not None:
            self.pointer = self.pointer.index_select(0, indices)


def _tracked(previous_attention: Tensor, follows: Tensor) -> Tensor:
    """(B, T, S) pointer attention of the step before each step, (B, T, S) bool `_follows` -> (B, T, S) bonus
    weights: a_{t-1, j-1} on the positions that follow the emitted token, normalised to sum 1 over them
    (all zero where none follows or the previous step read none of them)."""
    shifted = F.pad(previous_attention[..., :-1], (1, 0))  # (B, T, S): position j gets a_{t-1, j-1}
    weights = shifted * follows
    return weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)


def _follows(source_ids: Tensor, previous_ids: Tensor) -> Tensor:
    """(B, S) source ids, (B, T) fed tokens -> (B, T, S) bool: source position j follows an occurrence of
    the fed token (x_{j-1} = y_t); position 0 follows nothing."""
    follows = source_ids[:, None, :-1] == previous_ids[:, :, None]  # (B, T, S - 1)
    return F.pad(follows, (1, 0))
