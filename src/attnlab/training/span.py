"""Extractive span head: start / end scores over context tokens, best-span decoding across windows,
SQuAD exact match and F1 (overall and per group).

Batch contract (what the QA datamodule's collate gives; F features = context windows, B questions):
    input_ids / segments (F, N) long        [CLS] question [pad] [SEP] context-window tokens
    context_mask (F, N) bool                positions holding a context token (answers live here)
    question_mask (F, N) bool               positions holding a question token
    question_slots int                      the question region's width (context starts there)
    start_positions / end_positions (F,)    answer token positions in each window (0 = [CLS]: not in it)
    start_targets / end_targets (F, N) bool every occurrence of the answer text in each window ([CLS] if none);
                                            read with ``answer_targets="all_occurrences"``
    feature_example (F,) long               the question (0..B-1) each window belongs to
    offsets list[F] of [(start, end), ...]  character span of each context token of a window
    index (B,) long, ids, contexts, answers (list of reference texts per question), groups (B,) | None
    support_labels (F, N) float, optional   1 on context tokens of supporting facts (strong supervision)
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.functional.text import squad

from attnlab.attention import BiDAFAttention, MultiHeadAttention, build_positional_encoding
from attnlab.backbones.transformer import EncoderBlock
from attnlab.training.head import TaskHead

Interaction = Literal["none", "bidaf"]
AnswerTargets = Literal["labelled", "all_occurrences"]
SupportLoss = Literal["tokens", "sentences"]
ScoreName = Literal["exact_match", "f1"]


def sentence_support_loss(token_logits: Tensor, token_labels: Tensor, sentence_ids: Tensor) -> Tensor:
    """Listwise strong supervision: every supporting fact should win a softmax over its window's sentences.

    A sentence's score is the mean of its tokens' logits; the loss is the mean over supporting facts of
    -log softmax(scores)[fact], so each window spreads its probability over its k facts (1/k each at the
    optimum). Unlike per-token BCE, a model cannot get a low loss by calling every sentence a distractor.

    Args:
        token_logits: (F, N) support score per token.
        token_labels: (F, N) 1 on tokens of supporting facts.
        sentence_ids: (F, N) sentence index per context token within its window, -1 elsewhere.

    Returns:
        scalar loss over the windows holding at least one supporting fact (0 when none does).
    """
    num_sentences = max(int(sentence_ids.max()) + 1, 1)
    counts = _sum_per_sentence(torch.ones_like(token_logits), sentence_ids, num_sentences)  # (F, S)
    present = counts > 0
    scores = _sum_per_sentence(token_logits.float(), sentence_ids, num_sentences) / counts.clamp(min=1)  # (F, S)
    scores = scores.masked_fill(~present, torch.finfo(scores.dtype).min)  # finite: no NaN in an empty row
    is_fact = (_sum_per_sentence(token_labels.float(), sentence_ids, num_sentences) > 0) & present  # (F, S)
    log_probs = scores.log_softmax(dim=-1).masked_fill(~is_fact, 0.0)  # (F, S)
    facts = is_fact.sum(dim=-1)  # (F,)
    with_facts = facts > 0
    if not bool(with_facts.any()):
        return token_logits.sum() * 0.0
    return (-log_probs.sum(-1)[with_facts] / facts[with_facts]).mean()


def _sum_per_sentence(values: Tensor, sentence_ids: Tensor, num_sentences: int) -> Tensor:
    """values (F, N) -> (F, S): the sum over each sentence's tokens (tokens with id -1 count nowhere)."""
    inside = sentence_ids >= 0
    sums = values.new_zeros(values.shape[0], num_sentences)
    return sums.scatter_add_(1, sentence_ids.clamp(min=0), values * inside)


def best_spans(start_logits: Tensor, end_logits: Tensor, allowed: Tensor, *, max_answer_len: int) -> tuple[Tensor, Tensor, Tensor]:
    """The best span per row: argmax of start[i] + end[j] over allowed i <= j < i + max_answer_len.

    Args:
        start_logits / end_logits: (F, N) scores.
        allowed: (F, N) bool, positions a span may start or end at (a span must begin and end on
            allowed positions; spans can cross nothing else because context positions are contiguous).
        max_answer_len: longest span in tokens.

    Returns:
        (scores (F,), starts (F,), ends (F,)); rows without any allowed position score -inf.
    """
    if max_answer_len < 1:
        raise ValueError(f"max_answer_len={max_answer_len} must be >= 1")
    length = start_logits.shape[1]
    width = min(max_answer_len, length)
    start = start_logits.float().masked_fill(~allowed, float("-inf"))  # (F, N)
    end = end_logits.float().masked_fill(~allowed, float("-inf"))
    end_windows = F.pad(end, (0, width - 1), value=float("-inf")).unfold(1, width, 1)  # (F, N, L): end[i + k]
    scores = start[:, :, None] + end_windows  # (F, N, L)
    best, flat = scores.flatten(1).max(dim=1)  # (F,)
    starts = torch.div(flat, width, rounding_mode="floor")
    ends = starts + flat % width
    return best, starts, ends


def squad_scores(predictions: list[str], references: list[list[str]]) -> dict[str, Tensor]:
    """Per question, SQuAD exact match and F1 in percent (torchmetrics' SQuAD, the official normalisation:
    lowercase, no punctuation or articles), each the best over the question's reference answers."""
    em, f1 = [], []
    for index, (prediction, answers) in enumerate(zip(predictions, references, strict=True)):
        if not answers:
            raise ValueError(f"question {index} of the batch has no reference answer to score against")
        result = squad(
            preds=[{"prediction_text": prediction, "id": str(index)}],
            target=[{"answers": {"text": list(answers), "answer_start": [0] * len(answers)}, "id": str(index)}],
        )
        em.append(float(result["exact_match"]))
        f1.append(float(result["f1"]))
    return {"exact_match": torch.tensor(em), "f1": torch.tensor(f1)}


class SpanScore(Metric):
    """Mean of one per-question SQuAD score (percent), over every question or over one group's.

    ``update(scores, groups)``: scores from `squad_scores`, groups (B,) long or None.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, score: ScoreName, *, group: int | None = None) -> None:
        super().__init__()
        if score not in ("exact_match", "f1"):
            raise ValueError(f"score='{score}' is unknown; choose exact_match or f1")
        self.score, self.group = score, group
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, scores: dict[str, Tensor], groups: Tensor | None) -> None:
        values = scores[self.score].to(self.total.device, torch.float64)
        if self.group is not None:
            if groups is None:
                raise ValueError(
                    f"the {self.score} metric of group {self.group} needs per-question groups, but the batch has "
                    "none; set data.group_column (e.g. babi_task)"
                )
            values = values[groups.to(self.total.device) == self.group]
        self.total += values.sum()
        self.count += values.numel()

    def compute(self) -> Tensor:
        """The mean score; NaN when no question was scored (e.g. a group absent from the data)."""
        return (self.total / self.count.clamp(min=1)).float() if self.count > 0 else torch.tensor(float("nan"))


class SpanHead(TaskHead):
    """Start / end logits over the sequence, optionally after a BiDAF attention flow layer (whose
    question-to-context weights then come out as ``outputs["question_to_context"]`` (F, N)).

    ``interaction=none``: a linear layer on the encoder's output (BERT's span head). ``bidaf``: the
    encoder's context positions attend to its question positions both ways (`BiDAFAttention`), the flow
    G (4D) is projected to D and passes ``modeling_depth`` transformer blocks (BiDAF's modeling layer)
    before the linear span layer.

    Args:
        dim: encoder width D.
        interaction: none | bidaf.
        max_answer_len: longest answer in tokens at decoding.
        modeling_depth / num_heads: the BiDAF modeling layer.
        groups: group values with their own metrics (e.g. bAbI tasks [1, 2, 3] -> exact_match_task1 ...);
            None: overall metrics only.
        group_prefix: name part before the group value in those metric names.
        support_weight: weight of the strong-supervision loss: a linear layer scores every context
            token against the batch's ``support_labels``; 0: no such layer.
        support_loss: ``tokens``: binary cross-entropy per token (inside a supporting fact or not).
            ``sentences``: a sentence scores the mean of its tokens, and every supporting fact should
            win a softmax over its window's sentences (`sentence_support_loss`, needs the batch's
            ``sentence_ids``). With a few facts among a hundred sentences, the per-token loss lets a
            model call every sentence a distractor; the listwise one does not.
        answer_targets: ``labelled``: cross-entropy on the labelled answer's start and end (SQuAD's
            loss). ``all_occurrences``: the probability summed over every occurrence of the answer text
            (Clark and Gardner 2018's shared-normalisation objective within a window), so any mention
            of the right word counts.
    """

    def __init__(
        self,
        *,
        dim: int,
        interaction: Interaction = "none",
        max_answer_len: int = 30,
        modeling_depth: int = 1,
        num_heads: int = 4,
        groups: list[int] | None = None,
        group_prefix: str = "task",
        support_weight: float = 0.0,
        answer_targets: AnswerTargets = "labelled",
        support_loss: SupportLoss = "tokens",
    ) -> None:
        super().__init__()
        if interaction not in ("none", "bidaf"):
            raise ValueError(f"model interaction='{interaction}' is unknown; choose none or bidaf")
        if answer_targets not in ("labelled", "all_occurrences"):
            raise ValueError(f"head answer_targets='{answer_targets}' is unknown; choose labelled or all_occurrences")
        self.answer_targets = answer_targets
        if support_loss not in ("tokens", "sentences"):
            raise ValueError(f"head support_loss='{support_loss}' is unknown; choose tokens or sentences")
        self.support_loss = support_loss
        self.interaction, self.max_answer_len = interaction, max_answer_len
        self.groups, self.group_prefix = [int(g) for g in groups or []], group_prefix
        if interaction == "bidaf":
            self.bidaf = BiDAFAttention(dim=dim)
            self.flow_proj = nn.Linear(4 * dim, dim)
            self.modeling = nn.ModuleList(
                EncoderBlock(dim=dim, num_heads=num_heads, mlp_ratio=4.0, dropout=0.0, attention=_self_attention)
                for _ in range(modeling_depth)
            )
            self.modeling_norm = nn.LayerNorm(dim, eps=1e-6)
            # no positions here: the encoder has positioned its tokens already
            self.no_positions = build_positional_encoding("none", dim=dim, num_heads=num_heads, max_len=1)
        self.span = nn.Linear(dim, 2)
        if support_weight < 0:
            raise ValueError(f"support_weight={support_weight} must be >= 0")
        self.support_weight = support_weight
        self.support = nn.Linear(dim, 1) if support_weight > 0 else None

    def forward(self, hidden: Tensor, mask: Tensor | None, batch: dict[str, Any]) -> dict[str, Tensor]:
        outputs: dict[str, Tensor] = {}
        if self.support is not None:
            outputs["support_logits"] = self.support(hidden).squeeze(-1).float()  # (F, N)
        if self.interaction == "bidaf":
            hidden, outputs["question_to_context"] = self.attention_flow(hidden, mask, batch)  # (F, N, D), (F, N)
        logits = self.span(hidden).float()  # (F, N, 2)
        return {"start_logits": logits[..., 0], "end_logits": logits[..., 1], **outputs}

    def attention_flow(self, hidden: Tensor, mask: Tensor | None, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """hidden (F, N, D) -> (modelled (F, N, D), BiDAF's question-to-context weights (F, N), for pictures)."""
        slots = int(batch["question_slots"])
        question, question_mask = hidden[:, :slots], batch["question_mask"][:, :slots]  # (F, M, D), (F, M)
        flow, _, q2c = self.bidaf(hidden, question, context_mask=batch["context_mask"], question_mask=question_mask,
                                  need_weights=True)
        x = self.flow_proj(flow)  # (F, N, D)
        for block in self.modeling:
            x, _ = block(x, mask=mask, positions=self.no_positions)
        return self.modeling_norm(x), q2c

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> Tensor:
        allowed = batch["context_mask"].clone()
        allowed[:, 0] = True  # [CLS]: "the answer is not in this window"
        if self.answer_targets == "all_occurrences" and "start_targets" not in batch:
            raise ValueError("answer_targets=all_occurrences needs batch['start_targets'] / ['end_targets'] (QA batches "
                             "carry them); set the head's answer_targets=labelled")
        losses = []
        for side in ("start", "end"):
            logits = outputs[f"{side}_logits"].masked_fill(~allowed, float("-inf"))  # (F, N)
            if self.answer_targets == "labelled":
                losses.append(F.cross_entropy(logits, batch[f"{side}_positions"]))
            else:  # -log of the probability summed over the occurrences
                on_target = logits.masked_fill(~batch[f"{side}_targets"], float("-inf"))
                losses.append((torch.logsumexp(logits, -1) - torch.logsumexp(on_target, -1)).mean())
        loss = (losses[0] + losses[1]) / 2
        if self.support is not None and self.training and "support_labels" not in batch:
            raise ValueError(
                f"support_weight={self.support_weight} trains on supporting facts, but the training batch has no "
                "support_labels; set data.support_column (e.g. support_spans) or support_weight=0"
            )
        if self.support is not None and "support_labels" in batch:
            if self.support_loss == "tokens":
                context = batch["context_mask"]
                tagging = F.binary_cross_entropy_with_logits(
                    outputs["support_logits"][context], batch["support_labels"][context]
                )
            else:
                if "sentence_ids" not in batch:
                    raise ValueError("support_loss=sentences needs batch['sentence_ids'] (QA batches carry them); "
                                     "set the head's support_loss=tokens")
                tagging = sentence_support_loss(outputs["support_logits"], batch["support_labels"], batch["sentence_ids"])
            loss = loss + self.support_weight * tagging
        return loss

    def decode(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> list[dict[str, Any]]:
        """Per question: the best span over its windows as text, character start and score."""
        scores, starts, ends = best_spans(
            outputs["start_logits"], outputs["end_logits"], batch["context_mask"], max_answer_len=self.max_answer_len
        )
        slots = int(batch["question_slots"])
        best: dict[int, tuple[float, int, int, int]] = {}
        for feature, example in enumerate(batch["feature_example"].tolist()):
            score = float(scores[feature])
            if example not in best or score > best[example][0]:
                best[example] = (score, feature, int(starts[feature]), int(ends[feature]))
        answers = []
        for example, context in enumerate(batch["contexts"]):
            if example not in best or best[example][0] == float("-inf"):  # no context token at all
                answers.append({"text": "", "answer_start": -1, "score": float("-inf")})
                continue
            score, feature, start, end = best[example]
            offsets = batch["offsets"][feature]
            char_start, char_end = offsets[start - slots][0], offsets[end - slots][1]
            answers.append({"text": context[char_start:char_end], "answer_start": char_start, "score": score})
        return answers

    def predict(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> list[dict[str, Any]]:
        records = []
        for answer, row, question_id, references in zip(
            self.decode(outputs, batch), batch["index"].tolist(), batch["ids"], batch["answers"], strict=True
        ):
            record = {"index": row, "id": question_id, "prediction_text": answer["text"],
                      "answer_start": answer["answer_start"], "score": round(answer["score"], 4)}
            if references:
                record["answers"] = list(references)
            records.append(record)
        return records

    def build_metrics(self) -> MetricCollection:
        metrics: dict[str, Metric] = {"exact_match": SpanScore("exact_match"), "f1": SpanScore("f1")}
        for group in self.groups:
            metrics[f"exact_match_{self.group_prefix}{group}"] = SpanScore("exact_match", group=group)
            metrics[f"f1_{self.group_prefix}{group}"] = SpanScore("f1", group=group)
        # no compute groups: metrics whose states happen to match after one batch must stay separate
        return MetricCollection(metrics, compute_groups=False)

    def update_metrics(self, metrics: MetricCollection, outputs: dict[str, Tensor], batch: dict[str, Any]) -> None:
        texts = [answer["text"] for answer in self.decode(outputs, batch)]
        scores, groups = squad_scores(texts, batch["answers"]), batch.get("groups")
        for metric in metrics.values():
            if metric.group is None or groups is not None:  # data without groups (SQuAD): group metrics stay empty
                metric.update(scores, groups)


def _self_attention(*, dim: int, num_heads: int) -> nn.Module:
    return MultiHeadAttention(dim=dim, num_heads=num_heads)
