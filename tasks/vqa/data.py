"""DataModule for VQA: rows of (image, question, answer[s]) grouped by image, so each batch item is one
image with all of its questions and the model encodes every image once.

Two answer schemas load through the same path:

- Sort-of-CLEVR style: ``answer`` (one string), plus ``question_type`` / ``question_family``;
- VQA style (VQAv2 on the hub): ``answers`` (a list of human answers, strings or ``{"answer": ...}``),
  scored with the VQA accuracy min(#matching answers / 3, 1).

Question words and answers are indexed with vocabularies built from the training split; they are
part of the datamodule's state, which Lightning stores in every checkpoint, so `eval.py` maps
another dataset's text with the vocabulary the model was trained on.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from datasets import Dataset, DatasetDict
from datasets import Image as ImageFeature
from PIL import Image as PILImage
from torch import Tensor
from torch.utils.data import Dataset as TorchDataset

from attnlab.data import HFDataModule
from tasks.vqa.builder import FAMILIES, build_sort_of_clevr

log = logging.getLogger(__name__)
PAD, UNK, CLS = "<pad>", "<unk>", "<cls>"
SPECIAL_WORDS = (PAD, UNK, CLS)
QUESTION_TYPES = ("non-relational", "relational")
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def tokenize(question: str) -> list[str]:
    """Lower-cased words and punctuation marks: "Is the red object...?" -> [is, the, red, object, ..., ?]."""
    return _WORD.findall(question.lower())


def normalise_answer(answer: str) -> str:
    return " ".join(answer.lower().strip().rstrip(".").split())


def human_answers(row: dict[str, Any]) -> list[str]:
    """The row's reference answers: [answer] (Sort-of-CLEVR) or the VQA annotators' list."""
    if "answers" in row and row["answers"] is not None:
        values = row["answers"]
        if isinstance(values, dict):  # datasets' Sequence of dicts is stored column-wise
            values = values.get("answer", [])
        return [normalise_answer(v["answer"] if isinstance(v, dict) else str(v)) for v in values]
    return [normalise_answer(str(row["answer"]))]


class ImageGroups(TorchDataset):
    """One item per distinct image: the decoded image and the records of every question asked about it.

    ``describe`` turns a row without its image into the question's record (`VQADataModule.preprocess`);
    rows are grouped by ``image_id`` when the dataset has one, else by the bytes of the stored image.
    """

    def __init__(
        self, split: Dataset, describe: Callable[[dict[str, Any]], dict[str, Any]], *, name: str, origin: str
    ) -> None:
        self.name, self.origin = name, origin
        text = split.select_columns([c for c in split.column_names if c != "image"]).to_dict()
        rows = [dict(zip(text, values)) for values in zip(*text.values())]
        self.records = [describe(row) for row in rows]
        self.images = split.select_columns(["image"])
        self.groups = self._group(split, rows)

    def _group(self, split: Dataset, rows: list[dict[str, Any]]) -> list[list[int]]:
        if rows and "image_id" in rows[0]:
            keys: list[Any] = [r["image_id"] for r in rows]
        else:
            raw = split.select_columns(["image"]).cast_column("image", ImageFeature(decode=False))
            keys = [hashlib.sha1(item["bytes"] or item["path"].encode()).hexdigest() for item in raw["image"]]
        groups: dict[Any, list[int]] = {}
        for index, key in enumerate(keys):
            groups.setdefault(key, []).append(index)
        return list(groups.values())

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rows = self.groups[index]
        try:
            image = self.images[rows[0]]["image"]
            if not isinstance(image, PILImage.Image):
                raise TypeError(f"column 'image' holds {type(image).__name__}, not an image")
            pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
        except Exception as err:
            raise ValueError(
                f"cannot read the image of sample {rows[0]} of split '{self.name}' in {self.origin}: "
                f"{type(err).__name__}: {err}. Fix or drop that row and re-save the dataset."
            ) from err
        return {"image": pixels, "rows": rows, "records": [self.records[r] for r in rows]}  # image: (3, H, W) uint8


class VQADataModule(HFDataModule):
    """Batches of images with all their questions; see the module docstring for the schemas.

    Args:
        image_size: images are resized to this side (Sort-of-CLEVR: 75).
        max_words: question vocabulary capacity (the model's embedding rows), specials included.
        max_answers: answer vocabulary capacity (the model's classifier width).
        max_answers_per_question: human answers kept per question for the VQA accuracy.
        train_images / validation_images / test_images / builder_seed: Sort-of-CLEVR builder sizes.
        batch_size: images per batch (each brings all of its questions).
    """

    task_name = "vqa"
    required_columns = ("image", "question")

    def __init__(
        self,
        *,
        image_size: int = 75,
        max_words: int = 128,
        max_answers: int = 16,
        max_answers_per_question: int = 10,
        train_images: int = 9_600,
        validation_images: int = 200,
        test_images: int = 200,
        builder_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.image_size = image_size
        self.max_words, self.max_answers = max_words, max_answers
        self.max_answers_per_question = max_answers_per_question
        self.sizes = {"train_images": train_images, "validation_images": validation_images, "test_images": test_images}
        self.builder_seed = builder_seed
        self.words: list[str] = []  # index -> word; set from train or from a checkpoint
        self.answer_names: list[str] = []  # index -> answer

    # ---- builder ------------------------------------------------------------------------------
    def builder_params(self) -> dict[str, Any]:
        return {"builder": "sort-of-clevr", "version": 3, "seed": self.builder_seed, **self.sizes}

    def build(self) -> DatasetDict:
        return build_sort_of_clevr(seed=self.builder_seed, **self.sizes)

    # ---- vocabularies (checkpointed through state_dict) ----------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "words": list(self.words), "answers": list(self.answer_names)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.words, self.answer_names = list(state_dict["words"]), list(state_dict["answers"])
        self._index_vocabularies()

    def _index_vocabularies(self) -> None:
        self.word_index = {w: i for i, w in enumerate(self.words)}
        self.answer_index = {a: i for i, a in enumerate(self.answer_names)}

    def _build_vocabularies(self, train: ImageGroups) -> None:
        word_counts = Counter(w for record in train.records for w in tokenize(record["question"]))
        answer_counts = Counter(a for record in train.records for a in record["answers"])
        words = [w for w, _ in sorted(word_counts.items(), key=lambda kv: (-kv[1], kv[0]))]
        answers = [a for a, _ in sorted(answer_counts.items(), key=lambda kv: (-kv[1], kv[0]))]
        self.words = list(SPECIAL_WORDS) + words[: self.max_words - len(SPECIAL_WORDS)]
        self.answer_names = answers[: self.max_answers]
        if len(answers) > self.max_answers:
            kept = sum(answer_counts[a] for a in self.answer_names) / sum(answer_counts.values())
            log.warning(f"{len(answers)} distinct answers; the {self.max_answers} most frequent cover {kept:.1%} "
                      "(raise model.num_answers to keep more)")
        if len(words) + len(SPECIAL_WORDS) > self.max_words:
            log.warning(f"{len(words)} distinct question words; the rest map to {UNK} (raise model.vocab_size)")
        self._index_vocabularies()

    # ---- loading ------------------------------------------------------------------------------
    def prepare(self, dataset: DatasetDict) -> DatasetDict:
        for name, split in dataset.items():
            if "answer" not in split.column_names and "answers" not in split.column_names:
                raise ValueError(
                    f"dataset {self.origin} split '{name}' has neither 'answer' nor 'answers' (it has "
                    f"{split.column_names}); rename with data.column_map='{{<old>: answer}}'"
                )
        return dataset

    def preprocess(self, row: dict[str, Any], *, train: bool = False) -> dict[str, Any]:
        """A row (without its image) -> the question's record; text is tokenized per batch in `collate`."""
        return {
            "question": str(row["question"]),
            "answers": human_answers(row),
            "type": row.get("question_type"),
            "family": row.get("question_family"),
        }

    def wrap_split(self, split: Dataset, name: str) -> ImageGroups:
        return ImageGroups(split, self.preprocess, name=name, origin=self.origin)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if not self.words:  # a checkpoint's vocabulary (load_state_dict) wins over this dataset's
            if "train" not in self.splits:
                raise ValueError(
                    f"dataset {self.origin} has no 'train' split to build the question and answer vocabularies "
                    "from; evaluate a checkpoint (eval.py ckpt_path=...), which brings its own"
                )
            self._build_vocabularies(self.splits["train"])

    # ---- batches ------------------------------------------------------------------------------
    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Items -> images (B, 3, S, S) float in [0, 1]; questions padded to (B, Q, L)."""
        images = torch.stack([self._resize(item["image"]) for item in items]).float().div_(255.0)
        num_questions = max(len(item["records"]) for item in items)
        token_lists = [[self._encode(r["question"]) for r in item["records"]] for item in items]
        length = max(len(t) for tokens in token_lists for t in tokens)
        batch_size, keep = len(items), self.max_answers_per_question
        tokens = torch.zeros(batch_size, num_questions, length, dtype=torch.long)  # PAD = 0
        question_mask = torch.zeros(batch_size, num_questions, dtype=torch.bool)
        answer_ids = torch.full((batch_size, num_questions, keep), -1, dtype=torch.long)
        target = torch.full((batch_size, num_questions), -100, dtype=torch.long)  # ignored by cross-entropy
        family = torch.full((batch_size, num_questions), -1, dtype=torch.long)
        qtype = torch.full((batch_size, num_questions), -1, dtype=torch.long)
        rows = torch.full((batch_size, num_questions), -1, dtype=torch.long)
        for b, item in enumerate(items):
            for q, (ids, record) in enumerate(zip(token_lists[b], item["records"])):
                tokens[b, q, : len(ids)] = torch.tensor(ids)
                question_mask[b, q] = True
                rows[b, q] = item["rows"][q]
                answers = record["answers"][:keep]
                known = [self.answer_index.get(a, -2) for a in answers]
                answer_ids[b, q, : len(known)] = torch.tensor(known)
                majority = Counter(a for a in known if a >= 0).most_common(1)
                if majority:
                    target[b, q] = majority[0][0]
                if record["family"] in FAMILIES:
                    family[b, q] = FAMILIES.index(record["family"])
                if record["type"] in QUESTION_TYPES:
                    qtype[b, q] = QUESTION_TYPES.index(record["type"])
        return {
            "image": images,  # (B, 3, S, S)
            "question_tokens": tokens,  # (B, Q, L) word ids, PAD = 0
            "question_mask": question_mask,  # (B, Q) True for real questions
            "answer": target,  # (B, Q) training target (majority known answer) or -100
            "answer_ids": answer_ids,  # (B, Q, K) human answers' ids, -2 unknown, -1 padding
            "question_family": family,  # (B, Q) index into FAMILIES or -1
            "question_type": qtype,  # (B, Q) 0 non-relational, 1 relational, -1 unknown
            "row": rows,  # (B, Q) row index in the split, -1 padding
            "questions": [[r["question"] for r in item["records"]] for item in items],
            "answer_names": self.answer_names,  # id -> answer, for predictions
        }

    def _encode(self, question: str) -> list[int]:
        unk = self.word_index[UNK]
        return [self.word_index[CLS]] + [self.word_index.get(w, unk) for w in tokenize(question)]

    def _resize(self, image: Tensor) -> Tensor:
        if image.shape[-2:] == (self.image_size, self.image_size):
            return image
        resized = torch.nn.functional.interpolate(
            image[None].float(), size=(self.image_size, self.image_size), mode="bilinear", antialias=True
        )
        return resized[0].round().clamp(0, 255).to(torch.uint8)
