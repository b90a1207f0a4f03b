"""Extractive QA data in the SQuAD v1.1 schema: the offline bAbI builder (tasks 1-3), the hub's ``squad``
or a disk directory in that schema.

Each question becomes one or more *features*, the model's inputs::

    [CLS] question tokens [pad ...] [SEP] | context tokens of one window
    |<------- question_slots = max_question_len + 2 ------->|<-- <= max_length - question_slots -->|

The question region has a fixed width, so its positions are the same in every sequence: sliding-window
attention makes them its global tokens (``task.num_global``), and segment ids (0 question, 1 context)
tell the regions apart. A context longer than one window is split into windows starting every
``doc_stride`` context tokens (they overlap when ``doc_stride`` is smaller than the window), the
standard SQuAD treatment: a window that does not hold the answer is trained to point at [CLS], and at
evaluation the best span over all of a question's windows wins. Every batch item is one question with
all its windows, so that choice happens inside one batch.

The tokenizer (byte-level BPE, HF tokenizers) is trained on the training split's contexts and questions
and stored in the checkpoint; token character offsets map predicted spans back to the context's text.
"""

from __future__ import annotations

import bisect
import logging
import re
from dataclasses import dataclass
from typing import Any, Literal

import torch
from datasets import Dataset, DatasetDict
from torch.utils.data import Dataset as TorchDataset

from attnlab.data import HFDataModule
from attnlab.data.tokenized import TokenizedSplits
from attnlab.data.tokenizer import TextTokenizer

log = logging.getLogger(__name__)

QUESTION_SEGMENT, CONTEXT_SEGMENT = 0, 1
SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s|$)")  # a sentence ends at . ! ? (and closing quotes) before a space


@dataclass
class Window:
    """One feature: token ids of the whole sequence and the character spans of its context tokens."""

    input_ids: list[int]  # (N,) [CLS] question [pad] [SEP] context-window
    offsets: list[tuple[int, int]]  # per context token of the window, its span in the context
    start: int  # answer start position in input_ids, 0 ([CLS]) when the answer is not in this window
    end: int
    occurrences: list[tuple[int, int]]  # (start, end) in input_ids of every occurrence of the answer text in it
    sentences: list[int]  # per context token of the window: its sentence, counted from the window's first
    sentence_positions: list[int]  # per context token of the window: its position inside its sentence
    support: list[bool] | None = None  # per context token of the window: inside a supporting fact


@dataclass
class Question:
    """One question with its windows (a batch item)."""

    row: int
    id: str
    context: str
    question: str
    answers: list[str]  # reference texts ([] when unknown: raw predict inputs)
    group: int | None
    windows: list[Window]

    def length(self) -> int:
        return max(len(w.input_ids) for w in self.windows) * len(self.windows)


class QuestionWindows(TorchDataset):
    """One split, tokenized and windowed once: item i -> question i with all of its windows."""

    def __init__(self, questions: list[Question]) -> None:
        self.questions = questions

    def __len__(self) -> int:
        return len(self.questions)

    def lengths(self) -> list[int]:
        """Per question, the tokens its windows occupy in a batch (the cost length bucketing evens out)."""
        return [q.length() for q in self.questions]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"index": index, "question": self.questions[index]}


class QADataModule(TokenizedSplits, HFDataModule):
    """SQuAD-schema questions -> windowed [CLS] question [SEP] context features (module docstring).

    Args:
        babi_tasks / size / test_size / builder_seed: the offline bAbI builder (tasks 1-3, "10k" or "1k"
            training questions per task, or a number for tiny test builds; test questions per task).
        group_column: integer column whose values get their own metrics (``babi_task``); None: none.
        support_column: column of supporting-fact character spans ({start: [...], end: [...]}, the
            builder's ``support_spans``); batches then carry per-token ``support_labels`` for a head
            trained with strong supervision. Splits without the column get none. None: not read.
        vocab_size / tokenizer_model: the tokenizer trained on the training split.
        max_question_len: question tokens kept (longer questions are cut, and counted in the log).
        max_length: tokens per feature, question region included.
        doc_stride: context tokens between the starts of consecutive windows of a long context.
        max_tokens: if set, training batches group questions of similar length under this padded-token
            budget (at most ``batch_size`` questions); None: plain batches.
        max_validation_items: validate on this many questions, drawn evenly over the split; None: all.
        **kwargs: `HFDataModule` arguments (source, path, name, batch_size, ...).
    """

    task_name = "qa"
    bucket_width = 16
    required_columns = ("context", "question", "answers")

    def __init__(
        self,
        *,
        babi_tasks: list[int] | tuple[int, ...] = (1, 2, 3),
        size: str | int = "10k",
        test_size: int = 1000,
        builder_seed: int = 0,
        group_column: str | None = "babi_task",
        support_column: str | None = None,
        vocab_size: int = 1000,
        tokenizer_model: Literal["bpe", "unigram"] = "bpe",
        max_question_len: int = 16,
        max_length: int = 1024,
        doc_stride: int = 256,
        max_tokens: int | None = None,
        max_validation_items: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.babi_tasks, self.size, self.builder_seed = [int(t) for t in babi_tasks], size, builder_seed
        self.test_size = test_size
        self.group_column, self.support_column = group_column, support_column
        self.vocab_size, self.tokenizer_model = vocab_size, tokenizer_model
        self.max_question_len, self.max_length, self.doc_stride = max_question_len, max_length, doc_stride
        if max_question_len < 1:
            raise ValueError(f"data.max_question_len={max_question_len} must be >= 1")
        if self.window_capacity < 1:
            raise ValueError(
                f"data.max_length={max_length} leaves no room for context after the question region of "
                f"{self.question_slots} tokens; raise data.max_length or lower data.max_question_len"
            )
        if not 1 <= doc_stride <= self.window_capacity:
            raise ValueError(
                f"data.doc_stride={doc_stride} must be in 1..{self.window_capacity} (the context tokens of one "
                "window), or windows would skip context"
            )
        self.max_tokens, self.max_validation_items = max_tokens, max_validation_items
        self.tokenizer: TextTokenizer | None = None

    @property
    def question_slots(self) -> int:
        """Width of the question region: [CLS] + max_question_len + [SEP]."""
        return self.max_question_len + 2

    @property
    def window_capacity(self) -> int:
        """Context tokens per window."""
        return self.max_length - self.question_slots

    # ---- builder ------------------------------------------------------------------------------
    def builder_params(self) -> dict[str, Any]:
        return {"builder": "babi", "version": 2, "tasks": sorted(self.babi_tasks), "size": self.size,
                "test_size": self.test_size, "seed": self.builder_seed}

    def build(self) -> DatasetDict:
        from tasks.qa.builder import build_babi

        return build_babi(tasks=self.babi_tasks, size=self.size, seed=self.builder_seed, test_size=self.test_size)

    # ---- loading and the tokenizer (checkpointed) -----------------------------------------------
    def prepare(self, dataset: DatasetDict) -> DatasetDict:
        if self.group_column is not None:
            for name, split in dataset.items():
                if self.group_column not in split.column_names:
                    raise ValueError(
                        f"data.group_column={self.group_column} is not a column of split '{name}' in {self.origin} "
                        f"(it has {split.column_names}); set data.group_column=null (e.g. for SQuAD) and "
                        "model.tasks.qa.head.groups=null"
                    )
        if self.support_column is not None and "train" in dataset and self.support_column not in dataset["train"].column_names:
            raise ValueError(
                f"data.support_column={self.support_column} is not a column of the training split in {self.origin} "
                f"(it has {dataset['train'].column_names}); set data.support_column=null and "
                "model.tasks.qa.head.support_weight=0 to train without supporting facts"
            )
        if self.max_validation_items is not None and "validation" in dataset:
            validation = dataset["validation"]
            keep = min(len(validation), self.max_validation_items)
            dataset["validation"] = validation.shuffle(seed=self.seed).select(range(keep))  # every group represented
        if self.tokenizer is None:
            if "train" not in dataset:
                raise ValueError(
                    f"dataset {self.origin} has no 'train' split to train the tokenizer on; evaluate a checkpoint "
                    "(eval.py ckpt_path=...), which brings its own"
                )
            train = dataset["train"]
            self.tokenizer = TextTokenizer.train(
                [*train["context"], *train["question"]], vocab_size=self.vocab_size, model=self.tokenizer_model
            )
            log.info("trained a %s tokenizer on the training split: %d ids", self.tokenizer_model, self.tokenizer.vocab_size)
        return dataset

    # ---- features ------------------------------------------------------------------------------
    def wrap_split(self, split: Dataset, name: str) -> QuestionWindows:
        if self.tokenizer is None:
            raise RuntimeError("the tokenizer is neither trained nor restored; call setup() first")
        def column(name: str | None, fill: Any = lambda row: None) -> list:
            """A column as a plain list (indexing a datasets Column row by row is slow); ``fill(row)`` if absent."""
            if name is not None and name in split.column_names:
                return list(split[name])
            return [fill(row) for row in range(len(split))]

        contexts, questions = column("context"), column("question")  # required columns, checked on loading
        answers, ids = column("answers"), column("id", str)
        groups, supports = column(self.group_column), column(self.support_column)
        for row, context in enumerate(contexts):
            if not context or not context.strip():
                raise ValueError(
                    f"row {row} (id {ids[row]}) of split '{name}' in {self.origin} has an empty context; drop that "
                    "row (dataset.filter) and re-save the dataset"
                )
        encoded_contexts = self.tokenizer.encode_with_offsets(contexts)
        encoded_questions = self.tokenizer.encode_batch(questions)
        cut = sum(len(q) > self.max_question_len for q in encoded_questions)
        if cut:
            log.info("split '%s': %d of %d questions are longer than data.max_question_len=%d tokens and are cut",
                     name, cut, len(questions), self.max_question_len)
        windowed = sum(len(c[0]) > self.window_capacity for c in encoded_contexts)
        if windowed:
            log.info("split '%s': %d of %d contexts are longer than one window (%d tokens) and are split into "
                     "windows every data.doc_stride=%d tokens", name, windowed, len(contexts), self.window_capacity,
                     self.doc_stride)
        items = []
        for row in range(len(split)):
            references, span = self._answer_span(answers[row], contexts[row], row=row, row_id=ids[row], split=name)
            token_ids, offsets = encoded_contexts[row]
            token_spans = [] if span is None else _token_spans(
                offsets, _occurrences(contexts[row], span), row=row, row_id=ids[row], split=name
            )  # the labelled answer first, then its other occurrences
            group = groups[row]
            support = None
            if supports[row] is not None:
                pairs = self._support_spans(supports[row], contexts[row], row=row, row_id=ids[row], split=name)
                support = _support_flags(offsets, pairs)
            items.append(Question(
                row=row, id=str(ids[row]), context=contexts[row], question=questions[row], answers=references,
                group=None if group is None else int(group),
                windows=self._windows(encoded_questions[row], token_ids, offsets, token_spans,
                                      _sentence_index(contexts[row], offsets), support),
            ))
        return QuestionWindows(items)

    def _answer_span(
        self, answers: dict[str, list] | None, context: str, *, row: int, row_id: str, split: str
    ) -> tuple[list[str], tuple[int, int] | None]:
        """(reference texts, character span of the first answer) after checking it lies in the context."""
        if not answers or not answers.get("text"):
            return [], None
        texts, starts = list(answers["text"]), list(answers.get("answer_start") or [])
        if len(starts) != len(texts):
            raise ValueError(
                f"row {row} (id {row_id}) of split '{split}' in {self.origin} has {len(texts)} answer texts but "
                f"{len(starts)} answer_start values; give one start per text"
            )
        text, start = texts[0], int(starts[0])
        if not text or context[start : start + len(text)] != text:
            found = context.find(text) if text else -1
            hint = f"the text occurs at {found}" if found >= 0 else "the text does not occur in the context"
            raise ValueError(
                f"row {row} (id {row_id}) of split '{split}' in {self.origin}: answer {text!r} is not at "
                f"answer_start={start} of its context ({hint}); fix answer_start or drop the row"
            )
        return texts, (start, start + len(text))

    def _support_spans(
        self, spans: dict[str, list[int]], context: str, *, row: int, row_id: str, split: str
    ) -> list[tuple[int, int]]:
        """The (start, end) character spans of one row's supporting facts, checked against its context."""
        starts, ends = list(spans.get("start") or []), list(spans.get("end") or [])
        bad = len(starts) != len(ends) or any(not 0 <= a < b <= len(context) for a, b in zip(starts, ends))
        if bad:
            raise ValueError(
                f"row {row} (id {row_id}) of split '{split}' in {self.origin}: {self.support_column} "
                f"{{start: {starts}, end: {ends}}} must pair each start with an end, 0 <= start < end <= "
                f"{len(context)} (the context's length); fix the spans or drop the row"
            )
        return list(zip(starts, ends, strict=True))

    def _windows(
        self,
        question_ids: list[int],
        context_ids: list[int],
        offsets: list[tuple[int, int]],
        token_spans: list[tuple[int, int]],
        sentences: tuple[list[int], list[int]],
        support: list[bool] | None = None,
    ) -> list[Window]:
        """The windows of one context. ``token_spans``: the answer's token spans, the labelled one first, then
        its other occurrences ([] without an answer); ``sentences``: per context token, its sentence and its
        position in it."""
        tokenizer = self.tokenizer
        assert tokenizer is not None
        question = question_ids[: self.max_question_len]
        prefix = [tokenizer.bos_id, *question] + [tokenizer.pad_id] * (self.max_question_len - len(question))
        prefix.append(tokenizer.eos_id)  # (question_slots,)
        windows, first = [], 0
        while True:
            last = min(first + self.window_capacity, len(context_ids))
            inside = [(self.question_slots + a - first, self.question_slots + b - first)
                      for a, b in token_spans if first <= a and b < last]  # positions in input_ids
            labelled = bool(token_spans) and first <= token_spans[0][0] and token_spans[0][1] < last
            start, end = inside[0] if labelled else (0, 0)
            window_support = None if support is None else support[first:last]
            sentence_ids = [k - sentences[0][first] for k in sentences[0][first:last]]
            windows.append(Window(prefix + context_ids[first:last], offsets[first:last], start, end, inside,
                                  sentence_ids, sentences[1][first:last], window_support))
            if last >= len(context_ids):
                return windows
            first += self.doc_stride

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Questions -> their windows as padded features (see `attnlab.training.span` for the fields)."""
        questions: list[Question] = [item["question"] for item in items]
        windows = [(b, w) for b, q in enumerate(questions) for w in q.windows]
        width = max(len(w.input_ids) for _, w in windows)
        input_ids = torch.zeros(len(windows), width, dtype=torch.long)  # (F, N), pad id 0
        segments = torch.full((len(windows), width), CONTEXT_SEGMENT, dtype=torch.long)
        segments[:, : self.question_slots] = QUESTION_SEGMENT
        context_mask = torch.zeros(len(windows), width, dtype=torch.bool)
        sentence_ids = torch.full((len(windows), width), -1, dtype=torch.long)  # (F, N), -1 outside the context
        sentence_positions = torch.zeros(len(windows), width, dtype=torch.long)
        for f, (_, window) in enumerate(windows):
            input_ids[f, : len(window.input_ids)] = torch.tensor(window.input_ids)
            real = torch.tensor([end > start for start, end in window.offsets], dtype=torch.bool)
            context = slice(self.question_slots, self.question_slots + len(window.offsets))
            context_mask[f, context] = real
            sentence_ids[f, context] = torch.tensor(window.sentences)
            sentence_positions[f, context] = torch.tensor(window.sentence_positions)
        question_mask = torch.zeros_like(context_mask)
        question_mask[:, 1 : self.question_slots - 1] = input_ids[:, 1 : self.question_slots - 1] != 0
        groups = [q.group for q in questions]
        batch = {
            "index": torch.tensor([item["index"] for item in items]),  # (B,) first: the logged batch size
            "input_ids": input_ids,
            "segments": segments,
            "context_mask": context_mask,
            "question_mask": question_mask,
            "question_slots": self.question_slots,
            "sentence_ids": sentence_ids,  # (F, N): for `SentenceMemoryRoute`
            "sentence_positions": sentence_positions,
            "start_positions": torch.tensor([w.start for _, w in windows]),  # (F,)
            "end_positions": torch.tensor([w.end for _, w in windows]),
            **_occurrence_targets([w for _, w in windows], width),  # start_targets / end_targets (F, N)
            "feature_example": torch.tensor([b for b, _ in windows]),  # (F,)
            "offsets": [w.offsets for _, w in windows],
            "ids": [q.id for q in questions],
            "questions": [q.question for q in questions],
            "contexts": [q.context for q in questions],
            "answers": [q.answers for q in questions],
            "groups": None if any(g is None for g in groups) else torch.tensor(groups),  # (B,) | None
        }
        if all(window.support is not None for _, window in windows):
            support_labels = torch.zeros(len(windows), width)  # (F, N): 1 on context tokens of supporting facts
            for f, (_, window) in enumerate(windows):
                flags = torch.tensor(window.support, dtype=torch.float32)
                support_labels[f, self.question_slots : self.question_slots + len(flags)] = flags
            batch["support_labels"] = support_labels
        return batch


def _sentence_index(context: str, offsets: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Per token: the index of its sentence in the context and its position inside that sentence.

    Sentences end at ``.``, ``!`` or ``?`` (closing quotes or brackets included) followed by a space or the
    end of the text; a token belongs to the sentence its first character is in.
    """
    ends = [match.end() for match in SENTENCE_END.finditer(context)]
    sentence_ids, positions = [], []
    for start, _ in offsets:
        sentence = bisect.bisect_right(ends, start)
        same = bool(sentence_ids) and sentence_ids[-1] == sentence
        positions.append(positions[-1] + 1 if same else 0)
        sentence_ids.append(sentence)
    return sentence_ids, positions


def _occurrences(context: str, labelled: tuple[int, int]) -> list[tuple[int, int]]:
    """Character spans of the answer text's whole-word occurrences in the context, the labelled one first."""
    text = context[labelled[0] : labelled[1]]
    spans, start = [labelled], context.find(text)
    while start >= 0:
        end = start + len(text)
        whole = (start == 0 or not context[start - 1].isalnum()) and (end == len(context) or not context[end].isalnum())
        if whole and start != labelled[0]:
            spans.append((start, end))
        start = context.find(text, start + 1)
    return spans


def _occurrence_targets(windows: list[Window], width: int) -> dict[str, torch.Tensor]:
    """start_targets / end_targets (F, N) bool: the starts and ends of every answer occurrence in each window,
    [CLS] (position 0) for a window without one."""
    targets = {side: torch.zeros(len(windows), width, dtype=torch.bool) for side in ("start_targets", "end_targets")}
    for f, window in enumerate(windows):
        for start, end in window.occurrences or [(0, 0)]:
            targets["start_targets"][f, start] = True
            targets["end_targets"][f, end] = True
    return targets


def _covering_tokens(
    offsets: list[tuple[int, int]], char_spans: list[tuple[int, int]]
) -> list[tuple[int, int] | None]:
    """Per character span [start, end): the first and last non-blank token overlapping it, None if no token
    does (offsets are sorted and do not overlap)."""
    real = [t for t, (a, b) in enumerate(offsets) if b > a]
    starts, ends = [offsets[t][0] for t in real], [offsets[t][1] for t in real]
    covering: list[tuple[int, int] | None] = []
    for char_start, char_end in char_spans:
        first, last = bisect.bisect_right(ends, char_start), bisect.bisect_left(starts, char_end) - 1
        covering.append((real[first], real[last]) if first <= last else None)
    return covering


def _support_flags(offsets: list[tuple[int, int]], pairs: list[tuple[int, int]]) -> list[bool]:
    """Per context token: does it overlap one of the character spans ``pairs`` [(start, end), ...]?"""
    flags = [False] * len(offsets)
    for span in _covering_tokens(offsets, pairs):
        if span is None:
            continue
        for t in range(span[0], span[1] + 1):
            flags[t] = offsets[t][1] > offsets[t][0]  # blank tokens inside a span stay untagged
    return flags


def _token_spans(
    offsets: list[tuple[int, int]], char_spans: list[tuple[int, int]], *, row: int, row_id: str, split: str
) -> list[tuple[int, int]]:
    """Per character span: its first and last token; an error naming the row when no token covers one."""
    spans = []
    for (char_start, char_end), span in zip(char_spans, _covering_tokens(offsets, char_spans), strict=True):
        if span is None:
            raise ValueError(
                f"row {row} (id {row_id}) of split '{split}': no token covers the answer's characters "
                f"{char_start}..{char_end}; the answer must contain a non-space character"
            )
        spans.append(span)
    return spans
