"""The 2014 encoder-decoder: a bidirectional GRU encoder and a GRU decoder with attention (Bahdanau et al.).

`RecurrentEncoder` follows the backbone contract (``forward(tokens (B, N, D), mask) -> (B, N, D)``), so a
``backbone=bigru`` preset composes with any token task. `AttentiveGRUDecoder` follows the
`TransformerDecoder` contract (``forward(tokens, memory, memory_mask=, cache=, need_weights=)``,
``new_cache()``), so a sequence-to-sequence head and the generation utilities drive either one.

Shape legend: B batch, N / S source tokens, T target tokens of this call, D width, Hd GRU state width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attnlab.attention import AdditiveScore, MultiplicativeScore

DecoderScore = Literal["additive", "general", "dot"]


class RecurrentEncoder(nn.Module):
    """A stack of (bidirectional) GRUs over the adapter's tokens; padding is skipped, not read.

    Args:
        dim: width D of the tokens in and of the states out (a bidirectional layer runs two GRUs of
            width D / 2 and concatenates them, as in Bahdanau et al. 2014).
        depth: stacked GRU layers.
        bidirectional: read the sequence both ways (each state then summarises the whole sentence).
        dropout: between stacked layers (PyTorch's GRU dropout).
    """

    takes_pixels = False

    def __init__(self, *, dim: int = 256, depth: int = 1, bidirectional: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        if bidirectional and dim % 2:
            raise ValueError(f"backbone.dim ({dim}) must be even for a bidirectional GRU (two halves of D / 2)")
        if depth < 1:
            raise ValueError(f"backbone.depth ({depth}) must be >= 1")
        self.dim, self.depth, self.bidirectional = dim, depth, bidirectional
        self.rnn = nn.GRU(
            dim, dim // 2 if bidirectional else dim, num_layers=depth, batch_first=True,
            bidirectional=bidirectional, dropout=dropout if depth > 1 else 0.0,
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        """tokens (B, N, D), mask (B, N) True = real token (a left-aligned prefix) -> states (B, N, D);
        states at padded positions are zero."""
        if tokens.dim() != 3 or tokens.shape[-1] != self.dim:
            raise ValueError(f"encoder tokens must be (B, N, dim={self.dim}), got {tuple(tokens.shape)}")
        if mask is None:
            states, _ = self.rnn(tokens)  # (B, N, D)
            return self.norm(states)
        lengths = mask.sum(1).clamp(min=1).cpu()  # (B,) an all-padding row still runs one step
        packed = pack_padded_sequence(tokens, lengths, batch_first=True, enforce_sorted=False)
        states, _ = self.rnn(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=tokens.shape[1])  # (B, N, D)
        return self.norm(states) * mask.unsqueeze(-1)


@dataclass
class RecurrentDecoderCache:
    """Incremental-decoding state of an `AttentiveGRUDecoder`: the GRU state and the memory it attends to.

    Filled by the first decoder call; `reorder` keeps rows in place for beam search (as `DecoderCache`).
    """

    state: Tensor | None = None  # (B, Hd)
    memory: Tensor | None = None  # (B, S, D)
    memory_mask: Tensor | None = None  # (B, S) bool
    projected_keys: Tensor | None = None  # (B, S, A) the scorer's key projection, computed once
    length: int = 0  # target tokens decoded so far

    @property
    def has_memory(self) -> bool:
        return self.memory is not None

    def reorder(self, indices: Tensor) -> RecurrentDecoderCache:
        """Keep batch rows `indices` (N,) long in that order, repeats allowed; in place."""
        for name in ("state", "memory", "memory_mask", "projected_keys"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.index_select(0, indices))
        return self


class AttentiveGRUDecoder(nn.Module):
    """Bahdanau et al. (2014): at step i the previous state attends over the encoder states, then

        c_i = sum_j a_ij h_j,  a_i = softmax_j score(s_{i-1}, h_j)
        s_i = GRU([y_{i-1}; c_i], s_{i-1})
        o_i = tanh(W_o [s_i; c_i; y_{i-1}])          (the head maps o_i to vocabulary logits)

    with s_0 = tanh(W_s mean_j h_j). ``score=additive`` is Bahdanau's w . tanh(W_q s + W_k h);
    ``general`` is Luong et al.'s (2015) s^T W h; ``dot`` is s . h (needs hidden_dim = dim).

    Args:
        dim: width D of the target embeddings, the memory and the outputs.
        hidden_dim: GRU state width (default D).
        score: the attention score, see above.
        attention_dim: width of the additive score's tanh layer (default D).
        dropout: on the outputs o_i.
    """

    def __init__(
        self,
        *,
        dim: int,
        hidden_dim: int | None = None,
        score: DecoderScore = "additive",
        attention_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        hidden_dim = hidden_dim or dim
        if score == "additive":
            self.attention = AdditiveScore(query_dim=hidden_dim, key_dim=dim, hidden_dim=attention_dim or dim)
        elif score in ("general", "dot"):
            self.attention = MultiplicativeScore(query_dim=hidden_dim, key_dim=dim, score=score)
        else:
            raise ValueError(f"decoder score='{score}' is unknown; choose additive (Bahdanau), general or dot (Luong)")
        self.dim, self.hidden_dim, self.score, self.depth = dim, hidden_dim, score, 1
        self.init_state = nn.Linear(dim, hidden_dim)
        self.cell = nn.GRUCell(2 * dim, hidden_dim)
        self.out = nn.Linear(hidden_dim + 2 * dim, dim)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def new_cache(self) -> RecurrentDecoderCache:
        """An empty cache for incremental decoding with this decoder."""
        return RecurrentDecoderCache()

    def forward(
        self,
        tokens: Tensor,
        memory: Tensor | None,
        *,
        memory_mask: Tensor | None = None,
        padding_mask: Tensor | None = None,
        cache: RecurrentDecoderCache | None = None,
        need_weights: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """tokens (B, T, D) embedded previous outputs y_0..y_{T-1}, memory (B, S, D) -> outputs (B, T, D);
        with ``need_weights`` also [attention weights (B, 1, T, S)] (one "layer", one "head", the layout
        of `TransformerDecoder`). ``padding_mask`` is accepted for interface parity: a step never looks
        ahead, so padded targets cannot affect earlier outputs. With a cache, each call continues the
        cached state (the memory is read on the first call only)."""
        if tokens.dim() != 3 or tokens.shape[-1] != self.dim:
            raise ValueError(f"decoder tokens must be (B, T, dim={self.dim}), got {tuple(tokens.shape)}")
        if cache is not None and cache.has_memory:
            state, memory, memory_mask, keys = cache.state, cache.memory, cache.memory_mask, cache.projected_keys
        else:
            if memory is None:
                raise ValueError("memory (B, S, D) is required unless the decoder cache already holds it")
            memory_mask = None if memory_mask is None else memory_mask.bool()
            state = torch.tanh(self.init_state(_masked_mean(memory, memory_mask)))  # (B, Hd)
            keys = self.attention.project_keys(memory)  # (B, S, A)
        outputs, weights = [], []
        for step in range(tokens.shape[1]):
            previous = tokens[:, step]  # (B, D)
            context, step_weights = self.attention(state, memory, memory_mask, projected_keys=keys)  # (B, D), (B, S)
            state = self.cell(torch.cat([previous, context], -1), state)  # (B, Hd)
            outputs.append(torch.tanh(self.out(torch.cat([state, context, previous], -1))))  # (B, D)
            weights.append(step_weights)
        if cache is not None:
            cache.state, cache.memory, cache.memory_mask, cache.projected_keys = state, memory, memory_mask, keys
            cache.length += tokens.shape[1]
        hidden = self.drop(torch.stack(outputs, 1))  # (B, T, D)
        return (hidden, [torch.stack(weights, 1).unsqueeze(1)]) if need_weights else hidden


def _masked_mean(memory: Tensor, mask: Tensor | None) -> Tensor:
    """memory (B, S, D), mask (B, S) True = real -> the mean over real positions (B, D)."""
    if mask is None:
        return memory.mean(1)
    weights = mask.unsqueeze(-1).to(memory.dtype)  # (B, S, 1)
    return (memory * weights).sum(1) / weights.sum(1).clamp(min=1.0)
