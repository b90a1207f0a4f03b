"""Text adapter: a batch's token ids -> embedded tokens plus their padding mask."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

from attnlab.attention import build_positional_encoding

# absolute encodings an adapter can add to its tokens (relative ones live in the backbone's attention)
ADAPTER_POSITIONS: tuple[str, ...] = ("none", "sinusoidal", "learned")


class TokenEmbed(nn.Module):
    """Token ids (B, N) -> (tokens (B, N, D), mask (B, N) bool, True = real token).

    Embeddings are scaled by sqrt(D) (Vaswani et al. 2017), so a table shared with an output
    projection (tied embeddings, see `Seq2SeqHead`) starts with unit-scale tokens and logits alike.

    Args:
        dim: token width D (the backbone's).
        vocab_size: number of ids V (the tokenizer's upper bound).
        tokens_key: batch field holding the (B, N) long ids.
        pad_id: the padding id: excluded from the mask, its embedding row is kept at zero.
        positions: ``sinusoidal`` | ``learned`` absolute positions added here, or ``none`` when the
            backbone positions its tokens itself (``backbone.pos_encoding=rope|alibi|relative``) or has no
            use for them (a recurrent encoder).
        max_len: longest sequence the positions cover.
        dropout: dropout on the embedded tokens.
        num_segments: > 0 adds a learned segment embedding (BERT's token types, e.g. question 0 /
            context 1 in extractive QA) read from ``batch[segments_key]`` (B, N) long.
        segments_key: batch field of the segment ids.
    """

    def __init__(
        self,
        *,
        dim: int,
        vocab_size: int,
        tokens_key: str = "source_tokens",
        pad_id: int = 0,
        positions: str = "sinusoidal",
        max_len: int = 1024,
        dropout: float = 0.0,
        num_segments: int = 0,
        segments_key: str = "segments",
    ) -> None:
        super().__init__()
        if positions not in ADAPTER_POSITIONS:
            raise ValueError(
                f"adapter positions='{positions}' is unknown; choose one of {', '.join(ADAPTER_POSITIONS)} "
                "(relative encodings: set backbone.pos_encoding and adapter positions=none)"
            )
        self.dim, self.vocab_size, self.tokens_key, self.pad_id = dim, vocab_size, tokens_key, pad_id
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        nn.init.normal_(self.embedding.weight, std=dim**-0.5)
        self.embedding.weight.data[pad_id].zero_()
        self.positions = build_positional_encoding(positions, dim=dim, num_heads=1, max_len=max_len)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.segments_key = segments_key
        self.segments = nn.Embedding(num_segments, dim) if num_segments > 0 else None
        if self.segments is not None:
            nn.init.normal_(self.segments.weight, std=0.02)

    def embed(self, ids: Tensor, *, start: int = 0) -> Tensor:
        """(B, T) ids -> (B, T, D) scaled embeddings at positions start..start+T."""
        return self.drop(self.positions.embed(self.embedding(ids) * math.sqrt(self.dim), start=start))

    def forward(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        ids = batch[self.tokens_key]  # (B, N) long
        if ids.dim() != 2:
            raise ValueError(f"batch['{self.tokens_key}'] must be (B, N) token ids, got shape {tuple(ids.shape)}")
        if int(ids.max()) >= self.vocab_size:
            raise ValueError(
                f"batch['{self.tokens_key}'] holds id {int(ids.max())} >= vocab_size={self.vocab_size}; "
                "the tokenizer and the model disagree: set the model's vocab_size to the tokenizer's"
            )
        tokens = self.embed(ids)  # (B, N, D)
        if self.segments is not None:
            if self.segments_key not in batch:
                raise ValueError(
                    f"the adapter has num_segments={self.segments.num_embeddings} but the batch has no "
                    f"'{self.segments_key}' field; set the adapter's num_segments=0 or add segment ids"
                )
            tokens = tokens + self.segments(batch[self.segments_key])  # (B, N, D)
        return tokens, ids != self.pad_id  # (B, N, D), (B, N)
