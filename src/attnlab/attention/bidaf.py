"""Bidirectional attention flow (Seo et al. 2017, BiDAF): context-to-question and question-to-context
attention from one trilinear similarity matrix.

Shape legend: B batch, N context positions, M question positions, D width.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnlab.attention.sdpa import softmax_attention


class TrilinearSimilarity(nn.Module):
    """S[i, j] = w_c . c_i + w_q . q_j + w_cq . (c_i * q_j), BiDAF's alpha(h, u) = w^T [h; u; h * u]."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.context_weight = nn.Parameter(torch.empty(dim))
        self.question_weight = nn.Parameter(torch.empty(dim))
        self.product_weight = nn.Parameter(torch.empty(dim))
        self.bias = nn.Parameter(torch.zeros(()))
        for weight in (self.context_weight, self.question_weight, self.product_weight):
            nn.init.normal_(weight, std=dim**-0.5)

    def forward(self, context: Tensor, question: Tensor) -> Tensor:
        """context (B, N, D), question (B, M, D) -> scores (B, N, M)."""
        product = (context * self.product_weight) @ question.transpose(1, 2)  # (B, N, M)
        return (
            product
            + (context @ self.context_weight)[:, :, None]  # (B, N, 1)
            + (question @ self.question_weight)[:, None, :]  # (B, 1, M)
            + self.bias
        )


class BiDAFAttention(nn.Module):
    """BiDAF's attention flow layer: G = [c; c2q; c * c2q; c * q2c] (B, N, 4D).

    - context-to-question: each context position attends over the question, c2q_i = sum_j a_ij q_j
      with a_i = softmax_j(S_i:);
    - question-to-context: one distribution over context positions, b = softmax_i(max_j S_ij), and
      q2c = sum_i b_i c_i, tiled over positions: which context words matter most to any question word.

    Args:
        dim: width D of context and question vectors.
    """

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.similarity = TrilinearSimilarity(dim)

    def forward(
        self,
        context: Tensor,
        question: Tensor,
        *,
        context_mask: Tensor,
        question_mask: Tensor,
        need_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        """context (B, N, D), question (B, M, D), masks (B, N) / (B, M) bool (True = real).

        Returns G (B, N, 4D), and with ``need_weights`` also the c2q weights (B, N, M) and the q2c
        weights (B, N).
        """
        scores = self.similarity(context, question)  # (B, N, M)
        c2q, c2q_weights = softmax_attention(
            scores[:, None], question[:, None], attn_mask=question_mask[:, None, None, :]
        )  # (B, 1, N, D), (B, 1, N, M)
        masked = scores.masked_fill(~question_mask[:, None, :], float("-inf"))
        strongest = masked.max(dim=-1).values  # (B, N): the best-matching question word per position
        strongest = torch.nan_to_num(strongest, neginf=0.0)  # rows without question words are masked below
        q2c, q2c_weights = softmax_attention(
            strongest[:, None, None, :], context[:, None], attn_mask=context_mask[:, None, None, :]
        )  # (B, 1, 1, D), (B, 1, 1, N)
        c2q, q2c = c2q[:, 0], q2c[:, 0].expand_as(context)  # (B, N, D) each
        flow = torch.cat([context, c2q, context * c2q, context * q2c], dim=-1)  # (B, N, 4D)
        if need_weights:
            return flow, c2q_weights[:, 0], q2c_weights[:, 0, 0]
        return flow
