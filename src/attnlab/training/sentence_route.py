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

``forget_heads=k`` turns the first k heads of every block into forgetting attention in story order
(Forgetting Transformer, Lin et al. 2025). Each memory emits a forget gate f in (0, 1) per head from the
block's input (its own state, modulated by the question's mean state). A memory reads the question
freely, itself, and older memories with the bias sum(log f) over the memories in between; the question
reads every memory with the bias of the memories newer than it. A closed gate hides everything older
than its memory, so "the latest event of this kind before here" is one sharp lookup instead of a ramp
that relative positions must build. For memories i (query) and j (key):

    bias[i, j] = sum of log f_l over the memories l newer than j and older than i   (j older than i)
               = 0 (j = i),  -inf (j newer than i)

``stick_heads=k`` turns the next k heads into stick-breaking attention over the memories (Tan et al. 2024):
the lookup "the nearest older memory that matches me", where the match depends on the query (the same
actor's previous move), which a forget gate, being the same for every query, cannot express. A query i
scores every memory j it may read with s_ij = q_i . k_j / sqrt(d) + b (its own projections); walking from
itself to older memories (the question: from the newest), each memory takes sigmoid(s_ij) of the stick
that the nearer ones left, and each question token gets what is left over (a query with no match reads
the question):

    bias[i, j] = log sigmoid(s_ij) + sum of log(1 - sigmoid(s_il)) over the memories l from i to j, j excluded
    bias[i, q] = sum of log(1 - sigmoid(s_il)) over every memory l it may read    (q a question token)

The heads' softmax adds these biases to their own scores, so it starts from the stick weights.
"""

from __future__ import annotations

import inspect
import math
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.attention import build_positional_encoding
from attnlab.training.route import TaskRoute


class SentenceMemoryRoute(TaskRoute):
    """batch with ``sentence_ids`` / ``sentence_positions`` (F, N) -> token features (F, N, D) (module docstring).

    The batch also gives ``question_slots`` (the width of the question region at the start of every
    feature); ``sentence_ids`` is -1 outside the context and counts sentences from 0 within each feature.

    Args:
        dim: backbone width D.
        max_sentence_tokens: position slots per sentence memory.
        backbone: the built backbone (the module passes it); forgetting heads need its depth and heads.
        forget_heads: heads per block that read the memories in story order with forget gates (module
            docstring); 0 leaves every head free.
        forget_bias_init: starting bias of the gate logits (2.0: f = 0.88, a mild recency at the start).
        stick_heads: the next heads per block, read the memories by stick-breaking from the query outwards
            (module docstring); 0 for none.
        stick_bias_init: starting offset b of the stick scores (-2.0: each memory takes about 0.12 of the stick).
        memory_positions: ``none`` | ``sinusoidal`` | ``learned``: an absolute encoding of each memory's age
            (its newest-first slot) added to its vector, MemN2N's temporal encoding in the content, so a
            state that reads a memory also reads when it happened (RoPE only shapes the scores).
        max_memories: memories per feature the ``memory_positions`` table covers.
        hop_weight: > 0 supervises the first stick head with the supporting facts (batches with
            ``support_labels``), MemNN's strongly supervised hops: in the last block the question's stick
            should land on the newest fact, in the block before it the newest fact's on the next older
            fact, and so on. The mean negative log stick weight, times this, is the route's ``aux_loss``.
    """

    def __init__(
        self,
        *,
        dim: int,
        backbone: nn.Module | None = None,
        max_sentence_tokens: int = 16,
        forget_heads: int = 0,
        forget_bias_init: float = 2.0,
        stick_heads: int = 0,
        stick_bias_init: float = -2.0,
        memory_positions: str = "none",
        max_memories: int = 1024,
        hop_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if max_sentence_tokens < 1:
            raise ValueError(f"route max_sentence_tokens={max_sentence_tokens} must be >= 1")
        self.out_dim, self.max_sentence_tokens = dim, max_sentence_tokens
        self.pool = nn.Linear(max_sentence_tokens * dim, dim)
        if memory_positions not in ("none", "sinusoidal", "learned"):
            raise ValueError(f"route memory_positions='{memory_positions}' is unknown; choose none, sinusoidal or learned")
        self.memory_positions = build_positional_encoding(memory_positions, dim=dim, num_heads=1, max_len=max_memories)
        self.max_memories = max_memories if memory_positions != "none" else None
        if hop_weight and not stick_heads:
            raise ValueError(f"route hop_weight={hop_weight} supervises a stick head; set stick_heads >= 1")
        self.hop_weight = hop_weight
        self.aux_loss: Tensor | None = None
        self.forget_gates: nn.ModuleList | None = None  # per block: memory (modulated by the question) -> K logits
        self.forget_asks: nn.ModuleList | None = None  # per block: the question's modulation of the memory
        self.stick_queries: nn.ModuleList | None = None  # per block: position -> K stick queries
        self.stick_keys: nn.ModuleList | None = None  # per block: memory -> K stick keys
        self.forget_heads, self.stick_heads = forget_heads, stick_heads
        if forget_heads < 0 or stick_heads < 0:
            raise ValueError(f"route forget_heads={forget_heads} and stick_heads={stick_heads} must be >= 0")
        if forget_heads or stick_heads:
            self.num_heads = self._check_backbone(backbone, forget_heads, stick_heads)
            depth = backbone.depth  # type: ignore[union-attr]
        if forget_heads:
            self.forget_gates = nn.ModuleList(nn.Linear(dim, forget_heads) for _ in range(depth))
            self.forget_asks = nn.ModuleList(nn.Linear(dim, dim) for _ in range(depth))
            for gate, ask in zip(self.forget_gates, self.forget_asks, strict=True):
                nn.init.constant_(gate.bias, forget_bias_init)
                nn.init.zeros_(ask.weight)  # starts unconditioned: gate(memory)
                nn.init.zeros_(ask.bias)
        if stick_heads:
            self.stick_dim = dim // self.num_heads
            self.stick_queries = nn.ModuleList(nn.Linear(dim, stick_heads * self.stick_dim) for _ in range(depth))
            self.stick_keys = nn.ModuleList(nn.Linear(dim, stick_heads * self.stick_dim) for _ in range(depth))
            self.stick_offsets = nn.Parameter(torch.full((depth, stick_heads), stick_bias_init))
        self.read = nn.Linear(dim, dim)  # sentence state -> what it asks of its tokens
        self.ask = nn.Linear(dim, dim)  # [CLS] state -> what the question asks of every token (e.g. "a room")
        self.key = nn.Linear(dim, dim)  # token -> what it offers

    @staticmethod
    def _check_backbone(backbone: nn.Module | None, forget_heads: int, stick_heads: int) -> int:
        """The backbone's heads per block, after checking that its attention takes a per-head score bias."""
        heads = f"forget_heads={forget_heads} stick_heads={stick_heads}"
        takes_bias = backbone is not None and "attn_bias" in inspect.signature(backbone.forward).parameters
        num_heads, depth = getattr(backbone, "num_heads", None), getattr(backbone, "depth", None)
        if not takes_bias or num_heads is None or depth is None:
            raise ValueError(
                f"route {heads} needs a transformer backbone that takes a per-block attention bias "
                f"(backbone=compact_rope, tiny, small, ...), not {type(backbone).__name__}; set "
                "model.tasks.qa.route.forget_heads=0 stick_heads=0 hop_weight=0 to use this backbone"
            )
        if forget_heads + stick_heads > num_heads:
            raise ValueError(f"route {heads} must together be at most backbone.num_heads={num_heads}; lower them")
        rejecting = sorted(
            {type(m).__name__ for m in backbone.modules() if getattr(m, "accepts_attn_mask", True) is False}
        )
        if rejecting:
            raise ValueError(
                f"route {heads} adds a per-head score bias, which {', '.join(rejecting)} cannot take; use it "
                "with attention=sdpa (or sliding_window, additive, luong), or set "
                "model.tasks.qa.route.forget_heads=0 stick_heads=0 hop_weight=0"
            )
        return int(num_heads)

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
        padding = torch.cat([mask[:, :slots], memory_mask], dim=1)  # (F, slots + S)
        if not (self.forget_heads or self.stick_heads):
            hidden = backbone(sequence, padding)  # (F, slots + S, D)
        else:
            hops = self.hop_targets(batch, memory_slot, memories.shape[1]) if self.hop_weight else None
            hop_losses: list[Tensor] = []
            bias = partial(self.attention_bias, slots=slots, memory_mask=memory_mask, question_mask=mask[:, :slots],
                           hops=hops, hop_losses=hop_losses)
            hidden = backbone(sequence, padding, attn_bias=bias)  # (F, slots + S, D)
            self.aux_loss = self.hop_weight * torch.stack(hop_losses).mean() if hop_losses else None
        reads = self.read(hidden[:, slots:])  # (F, S, D): per memory, then copied to its tokens (read is linear)
        sentence_reads = torch.gather(reads, 1, memory_slot.clamp(min=0)[..., None].expand(-1, -1, reads.shape[-1]))
        features = (sentence_reads + self.ask(hidden[:, :1])) * self.key(tokens)  # (F, N, D)
        in_context = (memory_slot >= 0)[..., None]
        features = torch.where(in_context, features, torch.zeros_like(features))
        features = torch.cat([hidden[:, :slots], features[:, slots:]], dim=1)  # question states stay
        return features, mask

    def attention_bias(
        self,
        block: int,
        normed: Tensor,
        *,
        slots: int,
        memory_mask: Tensor,
        question_mask: Tensor,
        hops: Tensor | None = None,
        hop_losses: list[Tensor] | None = None,
    ) -> Tensor:
        """Block `block`'s input (F, L = slots + S, D) -> attention bias (F, H, L, L): the forgetting heads,
        then the stick-breaking heads, then 0 in the free heads (module docstring)."""
        parts = []
        if self.forget_heads:
            parts.append(self.forgetting_bias(block, normed, slots=slots, memory_mask=memory_mask,
                                              question_mask=question_mask))
        if self.stick_heads:
            sticks = self.stick_bias(block, normed, slots=slots, memory_mask=memory_mask)  # (F, K, L, L)
            hop = len(self.stick_queries) - 1 - block  # the last block makes hop 0 (question -> newest fact)
            if hops is not None and hop_losses is not None and hop < hops.shape[1]:
                query, target = hops[:, hop, 0], hops[:, hop, 1]  # (F,): rows and key columns, -1: no such hop
                valid = target >= 0
                if valid.any():
                    features = torch.nonzero(valid).flatten()
                    log_weight = sticks[features, 0, query[valid], target[valid]]
                    hop_losses.append(-log_weight.mean())
            parts.append(sticks)
        free = self.num_heads - self.forget_heads - self.stick_heads
        parts.append(parts[0].new_zeros(normed.shape[0], free, *parts[0].shape[2:]))
        return torch.cat(parts, dim=1)  # (F, H, L, L)

    def hop_targets(self, batch: dict[str, Any], memory_slot: Tensor, num_memories: int) -> Tensor | None:
        """The supervised hops (F, hops, 2): (query row, key column) over [question; memories]; hop 0 goes from
        [CLS] to the newest supporting fact, hop k from fact k-1 to fact k (facts newest first); -1 pads.
        None when the batch has no ``support_labels`` (evaluation on data without supporting facts)."""
        labels = batch.get("support_labels")
        if labels is None:
            return None
        slots = int(batch["question_slots"])
        flagged = (labels > 0) & (memory_slot >= 0)  # (F, N)
        is_fact = torch.zeros(memory_slot.shape[0], num_memories, dtype=torch.bool, device=memory_slot.device)
        is_fact[torch.nonzero(flagged, as_tuple=True)[0], memory_slot[flagged]] = True  # (F, S)
        num_hops = int(is_fact.sum(1).max()) if is_fact.any() else 0
        hops = torch.full((memory_slot.shape[0], max(num_hops, 1), 2), -1, dtype=torch.long, device=memory_slot.device)
        for feature in range(memory_slot.shape[0]):
            facts = (torch.nonzero(is_fact[feature]).flatten() + slots).tolist()  # newest first
            for hop, fact in enumerate(facts):
                hops[feature, hop, 0] = 0 if hop == 0 else facts[hop - 1]
                hops[feature, hop, 1] = fact
        return hops

    def stick_bias(self, block: int, normed: Tensor, *, slots: int, memory_mask: Tensor) -> Tensor:
        """Block `block`'s input (F, L = slots + S, D) -> stick-breaking bias (F, stick_heads, L, L) (module
        docstring): memory i breaks the stick over itself and older memories, the question over every memory."""
        if self.stick_queries is None or self.stick_keys is None:
            raise RuntimeError("stick_bias needs stick_heads > 0")
        num_features, length, _ = normed.shape
        num_memories, heads = length - slots, self.stick_heads
        queries = self.stick_queries[block](normed).view(num_features, length, heads, -1).transpose(1, 2)  # (F, K, L, d)
        keys = self.stick_keys[block](normed[:, slots:]).view(num_features, num_memories, heads, -1).transpose(1, 2)
        scores = queries @ keys.transpose(-1, -2) / math.sqrt(self.stick_dim)  # (F, K, L, S)
        scores = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores  # sums need fp32
        scores = scores + self.stick_offsets[block].to(scores.dtype)[None, :, None, None]
        slot = torch.arange(num_memories, device=normed.device)
        first = torch.cat([slot.new_zeros(slots), slot])  # (L,): the nearest memory each position may read
        readable = (slot[None, :] >= first[:, None])[None, None] & memory_mask[:, None, None, :]  # (F, 1, L, S)
        stays = F.logsigmoid(-scores).masked_fill(~readable, 0.0)  # log(1 - sigmoid(s)): the stick passes on
        taken_before = stays.cumsum(-1) - stays  # (F, K, L, S): what nearer memories took
        memory_part = (F.logsigmoid(scores) + taken_before).masked_fill(~readable, float("-inf"))
        leftover = stays.sum(-1, keepdim=True).expand(-1, -1, -1, slots)  # (F, K, L, slots)
        return torch.cat([leftover, memory_part], dim=-1)  # (F, K, L, L)

    def forgetting_bias(
        self, block: int, normed: Tensor, *, slots: int, memory_mask: Tensor, question_mask: Tensor
    ) -> Tensor:
        """Block `block`'s input (F, L = slots + S, D) -> forgetting bias (F, forget_heads, L, L) over the
        memories (module docstring).

        A gate reads its memory modulated by the question region's mean state (``question_mask`` (F, slots),
        True on its real tokens), so what closes a gate can depend on what is asked."""
        if self.forget_gates is None or self.forget_asks is None:
            raise RuntimeError("forgetting_bias needs forget_heads > 0")
        region = normed[:, :slots]  # (F, slots, D)
        weights = question_mask.to(region.dtype)  # (F, slots)
        question = (region * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1)  # (F, D)
        memories = normed[:, slots:]  # (F, S, D), newest first
        logits = self.forget_gates[block](memories * (1 + self.forget_asks[block](question)[:, None]))  # (F, S, K)
        log_forget = F.logsigmoid(logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits)
        log_forget = log_forget * memory_mask[..., None]  # padding memories forget nothing
        newer_or_self = log_forget.cumsum(1)  # (F, S, K): sum over memories 0..s (newer ones and s)
        newer = newer_or_self - log_forget  # (F, S, K): sum over memories newer than s
        slot = torch.arange(log_forget.shape[1], device=normed.device)
        older = (slot[None, :] > slot[:, None])[None, :, :, None]  # (1, S_query, S_key, 1): key older than query
        itself = (slot[None, :] == slot[:, None])[None, :, :, None]
        between = newer[:, None] - newer_or_self[:, :, None]  # (F, S_query, S_key, K): memories strictly between
        memory_rows = torch.where(older, between, torch.where(itself, 0.0, float("-inf")))
        num_features, num_memories, heads = log_forget.shape
        free_keys = log_forget.new_zeros(num_features, slots + num_memories, slots, heads)  # the question: no bias
        question_rows = newer[:, None].expand(-1, slots, -1, -1)  # (F, slots, S, K): the question reads from now
        gated = torch.cat([free_keys, torch.cat([question_rows, memory_rows], dim=1)], dim=2)  # (F, L, L, K)
        return gated.permute(0, 3, 1, 2)  # (F, K, L, L)

    def memories(self, tokens: Tensor, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        """tokens (F, N, D) -> (memories (F, S, D) newest first, their mask (F, S), each token's memory slot
        (F, N), -1 outside the context)."""
        sentence_ids = batch["sentence_ids"]  # (F, N)
        memory_slot, counts = _memory_slots(sentence_ids)
        num_memories = max(int(counts.max()), 1)
        if self.max_memories is not None and num_memories > self.max_memories:
            raise ValueError(
                f"a feature holds {num_memories} sentences, more than route max_memories={self.max_memories} that "
                "memory_positions covers; raise model.tasks.qa.route.max_memories"
            )
        num_features, _, dim = tokens.shape
        inside = memory_slot >= 0  # (F, N)
        feature_index = torch.arange(num_features, device=tokens.device)[:, None].expand_as(sentence_ids)
        position = batch["sentence_positions"].clamp(max=self.max_sentence_tokens - 1)
        grid = tokens.new_zeros(num_features, num_memories, self.max_sentence_tokens, dim)  # (F, S, P, D)
        grid.index_put_((feature_index[inside], memory_slot[inside], position[inside]), tokens[inside], accumulate=True)
        memories = self.memory_positions.embed(self.pool(grid.flatten(2)))  # (F, S, D), plus age when enabled
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
