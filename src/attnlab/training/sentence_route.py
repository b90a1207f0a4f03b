"""A sentence-memory route: the backbone attends over the question's tokens and one slot per context sentence.

Memory networks (Weston et al. 2015; Sukhbaatar et al. 2015, MemN2N) read a story as a list of sentence
memories, not as a token stream; bAbI's reasoning (who holds the football, where they were before) hops
between sentences. This route keeps the shared encoder and the token-level span head of extractive QA:

    tokens (F, N, D) --pool each context sentence--> memories (F, S, D), newest first
    backbone([question tokens; memories])        --> question states, sentence states
    per context token: (read(its sentence's state) + ask([CLS] state)) * key(its token)
                                                  -> features (F, N, D) for the span head

Pooling keeps word order: a sentence's tokens fill ``max_sentence_tokens`` position slots that are
concatenated and projected (tokens past the last slot add into it). Memories are laid out newest first
after the question, so a relative position encoding (RoPE) sees each sentence's recency, MemN2N's
temporal encoding. The question region keeps its token positions, so sliding-window attention's global
question tokens and BiDAF's question states work unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from attnlab.training.route import TaskRoute


class SentenceMemoryRoute(TaskRoute):
    """batch with ``sentence_ids`` / ``sentence_positions`` (F, N) -> token features (F, N, D) (module docstring).

    The batch also gives ``question_slots`` (the width of the question region at the start of every
    feature); ``sentence_ids`` is -1 outside the context and counts sentences from 0 within each feature.

    Args:
        dim: backbone width D.
        max_sentence_tokens: position slots per sentence memory.
    """

    def __init__(self, *, dim: int, max_sentence_tokens: int = 16) -> None:
        super().__init__()
        if max_sentence_tokens < 1:
            raise ValueError(f"route max_sentence_tokens={max_sentence_tokens} must be >= 1")
        self.out_dim, self.max_sentence_tokens = dim, max_sentence_tokens
        self.pool = nn.Linear(max_sentence_tokens * dim, dim)
        self.read = nn.Linear(dim, dim)  # sentence state -> what it asks of its tokens
        self.ask = nn.Linear(dim, dim)  # [CLS] state -> what the question asks of every token (e.g. "a room")
        self.key = nn.Linear(dim, dim)  # token -> what it offers

    def forward(self, backbone: nn.Module, adapter: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        for key in ("sentence_ids", "sentence_positions", "question_slots"):
            if key not in batch:
                raise ValueError(
                    f"the sentence-memory route needs batch['{key}'] (QA batches carry it); use the token route "
                    "(route=null) for data without sentences"
                )
        tokens, mask = adapter(batch)  # (F, N, D), (F, N)
        slots = int(batch["question_slots"])
        memories, memory_mask, memory_slot = self.memories(tokens, batch)  # (F, S, D), (F, S), (F, N)
        sequence = torch.cat([tokens[:, :slots], memories], dim=1)  # (F, slots + S, D)
        hidden = backbone(sequence, torch.cat([mask[:, :slots], memory_mask], dim=1))  # (F, slots + S, D)
        sentence_states = torch.gather(
            hidden[:, slots:], 1, memory_slot.clamp(min=0)[..., None].expand(-1, -1, hidden.shape[-1])
        )  # (F, N, D): each token's sentence state
        features = (self.read(sentence_states) + self.ask(hidden[:, :1])) * self.key(tokens)  # (F, N, D)
        in_context = (memory_slot >= 0)[..., None]
        features = torch.where(in_context, features, torch.zeros_like(features))
        features = torch.cat([hidden[:, :slots], features[:, slots:]], dim=1)  # question states stay
        return features, mask

    def memories(self, tokens: Tensor, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        """tokens (F, N, D) -> (memories (F, S, D) newest first, their mask (F, S), each token's memory slot
        (F, N), -1 outside the context)."""
        sentence_ids = batch["sentence_ids"]  # (F, N)
        memory_slot, counts = _memory_slots(sentence_ids)
        num_memories = max(int(counts.max()), 1)
        num_features, _, dim = tokens.shape
        inside = memory_slot >= 0  # (F, N)
        feature_index = torch.arange(num_features, device=tokens.device)[:, None].expand_as(sentence_ids)
        position = batch["sentence_positions"].clamp(max=self.max_sentence_tokens - 1)
        grid = tokens.new_zeros(num_features, num_memories, self.max_sentence_tokens, dim)  # (F, S, P, D)
        grid.index_put_((feature_index[inside], memory_slot[inside], position[inside]), tokens[inside], accumulate=True)
        memories = self.pool(grid.flatten(2))  # (F, S, D)
        memory_mask = torch.arange(num_memories, device=tokens.device)[None] < counts[:, None]  # (F, S)
        return memories, memory_mask, memory_slot

    def token_view(self, values: Tensor, batch: dict[str, Any]) -> Tensor:
        """Per-position values over the backbone's sequence (F, slots + S) -> per token (F, N): a context
        token gets its sentence's value (e.g. attention weights drawn over the text)."""
        slots = int(batch["question_slots"])
        memory_slot, _ = _memory_slots(batch["sentence_ids"])  # (F, N)
        per_token = torch.gather(values[:, slots:], 1, memory_slot.clamp(min=0))  # (F, N)
        per_token = torch.where(memory_slot >= 0, per_token, torch.zeros_like(per_token))
        return torch.cat([values[:, :slots], per_token[:, slots:]], dim=1)


def _memory_slots(sentence_ids: Tensor) -> tuple[Tensor, Tensor]:
    """sentence_ids (F, N), -1 outside the context -> (each token's memory slot, newest sentence first, -1
    outside (F, N); sentences per feature (F,))."""
    counts = sentence_ids.max(dim=1).values + 1  # (F,)
    return torch.where(sentence_ids >= 0, counts[:, None] - 1 - sentence_ids, -1), counts
