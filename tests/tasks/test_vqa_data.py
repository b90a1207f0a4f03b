"""VQA data: grouping by image, vocabularies, the VQA-accuracy metric on the hub schema, bad input."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage
from tasks.vqa.data import VQADataModule, tokenize
from tasks.vqa.head import GroupMeanScore, VQAHead, vqa_scores


def _png(seed: int) -> dict:
    pixels = np.random.default_rng(seed).integers(0, 255, size=(20, 20, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def vqa_style_split(num_images: int, questions_per_image: int, seed: int) -> Dataset:
    """VQAv2-like rows: image, question, answers = 10 human answers as {"answer": ...} dicts; no image_id."""
    rows = {"image": [], "question": [], "answers": []}
    rng = np.random.default_rng(seed)
    for image in range(num_images):
        for q in range(questions_per_image):
            rows["image"].append(_png(seed * 1000 + image))
            rows["question"].append(f"What color is thing {q}?")
            votes = rng.choice(["red", "blue", "Red.", "green"], size=10).tolist()
            rows["answers"].append([{"answer": v} for v in votes])
    features = Features({"image": Image(), "question": Value("string"), "answers": [{"answer": Value("string")}]})
    return Dataset.from_dict(rows, features=features)


@pytest.fixture
def vqa_style_dir(tmp_path):
    path = tmp_path / "vqa_style"
    DatasetDict(
        {"train": vqa_style_split(6, 3, 0), "validation": vqa_style_split(2, 2, 1), "test": vqa_style_split(3, 4, 2)}
    ).save_to_disk(str(path))
    return path


def test_vqa_accuracy_is_min_matches_over_three():
    # answer ids: 10 human answers; -2 = an answer outside the vocabulary, -1 = padding
    answers = torch.tensor(
        [
            [0, 0, 0, 1, 1, 1, 1, 1, 1, 1],  # prediction 0 matches 3 -> 1.0
            [0, 0, 1, 1, 1, 1, 1, 1, 1, 1],  # matches 2 -> 2/3
            [0, -2, -2, -2, -2, -2, -2, -2, -2, -2],  # matches 1 -> 1/3 (unknown answers still count as given)
            [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],  # no match -> 0
            [0, -1, -1, -1, -1, -1, -1, -1, -1, -1],  # one reference answer (Sort-of-CLEVR) -> exact match
        ]
    )
    scores = vqa_scores(torch.zeros(5, dtype=torch.long), answers)
    assert torch.allclose(scores, torch.tensor([1.0, 2 / 3, 1 / 3, 0.0, 1.0]))


def test_group_metric_averages_only_its_group():
    metric = GroupMeanScore(family=2)
    metric.update(torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([2, 2, 1, -1]), torch.tensor([0, 0, 0, 0]))
    assert metric.compute().item() == pytest.approx(0.5)
    assert torch.isnan(GroupMeanScore(family=3).compute())


def test_hub_schema_groups_by_image_and_scores_with_vqa_accuracy(vqa_style_dir, tmp_path):
    data = VQADataModule(source="disk", path=str(vqa_style_dir), data_dir=str(tmp_path), image_size=20, batch_size=4)
    data.setup("fit")
    assert [len(data.splits[s]) for s in ("train", "validation", "test")] == [6, 2, 3]  # images, not rows
    assert "red" in data.answer_names and "Red." not in data.answer_names  # answers normalised
    batch = next(iter(data.test_dataloader()))
    assert batch["image"].shape == (3, 3, 20, 20) and batch["question_tokens"].shape[:2] == (3, 4)
    assert batch["question_mask"].all() and batch["answer_ids"].shape == (3, 4, 10)

    head = VQAHead(dim=16, num_answers=8, families=())
    logits = torch.full((3, 4, 8), -10.0)
    red = data.answer_index["red"]
    logits[..., red] = 10.0  # always answer "red"
    metrics = head.build_metrics()
    head.update_metrics(metrics, {"logits": logits}, batch)
    test = data.splits["test"]
    expected = np.mean(
        [min(sum(a == "red" for a in test.records[r]["answers"]) / 3, 1.0) for group in test.groups for r in group]
    )
    assert metrics.compute()["acc"].item() == pytest.approx(expected, abs=1e-6)
    records = head.predict({"logits": logits}, batch)
    assert len(records) == 12 and {r["prediction"] for r in records} == {"red"}


def test_vocabulary_comes_from_train_and_travels_in_the_state_dict(vqa_style_dir, tmp_path):
    data = VQADataModule(source="disk", path=str(vqa_style_dir), data_dir=str(tmp_path), image_size=20)
    data.setup("fit")
    state = data.state_dict()
    assert state["words"][:3] == ["<pad>", "<unk>", "<cls>"] and "thing" in state["words"]
    other = VQADataModule(source="disk", path=str(vqa_style_dir), data_dir=str(tmp_path), image_size=20)
    other.load_state_dict({"words": ["<pad>", "<unk>", "<cls>", "what"], "answers": ["blue"]})
    other.setup("test")  # a restored vocabulary is kept, not rebuilt from this dataset
    assert other.words == ["<pad>", "<unk>", "<cls>", "what"]
    batch = other.collate([other.splits["test"][0]])
    assert batch["question_tokens"][0, 0].tolist()[:3] == [2, 3, 1]  # <cls> what <unk>
    assert tokenize("Is the red object left?") == ["is", "the", "red", "object", "left", "?"]


def test_missing_answer_column_names_the_fix(tmp_path):
    split = vqa_style_split(2, 1, 0).remove_columns("answers")
    path = tmp_path / "no_answers"
    DatasetDict({"train": split, "test": split}).save_to_disk(str(path))
    data = VQADataModule(source="disk", path=str(path), data_dir=str(tmp_path), image_size=20)
    with pytest.raises(ValueError, match="neither 'answer' nor 'answers'.*column_map"):
        data.setup("fit")
