"""VQA end to end: every fusion trains through the CLI; eval.py scores another Sort-of-CLEVR dataset on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import DatasetDict
from tasks.vqa.builder import build_sort_of_clevr
from tests.conftest import run_script

from attnlab import cli
from attnlab.checkpoints import build_model

SMALL = ["task=vqa", "data.train_images=12", "data.validation_images=3", "data.test_images=4", "data.batch_size=4"]
FAMILY_KEYS = ["acc", "acc_relational", "acc_nonrelational", "acc/shape", "acc/closest_shape", "acc/count"]


@pytest.mark.parametrize(
    "fusion", ["cross", "cross model.tasks.vqa.route.fusion_depth=2 model.tasks.vqa.route.text_depth=1", "joint", "concat"]
)
def test_fast_dev_run_each_fusion(train_cfg, fusion):
    name, *options = fusion.split()
    cfg = train_cfg(*SMALL, "debug=fdr", f"task.fusion={name}", *options)
    cli.train(cfg)
    results = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    for key in FAMILY_KEYS:
        assert 0.0 <= results["test"][f"test/vqa/{key}"] <= 1.0


def test_each_image_is_encoded_once_per_batch(train_cfg):
    from hydra.utils import instantiate

    cfg = train_cfg(*SMALL)
    data = instantiate(cfg.data)
    data.setup("fit")
    model = build_model(cfg.model, {})
    batch = next(iter(data.train_dataloader()))
    calls = []
    model.backbone.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    outputs = model(batch, "vqa")
    assert calls == [torch.Size([4, 25, cfg.backbone.dim])]  # 4 images, not 4 x 20 questions
    assert outputs["logits"].shape[:2] == batch["question_mask"].shape == (4, 20)


def test_answers_to_an_images_questions_depend_on_that_image_only(train_cfg):
    from hydra.utils import instantiate

    cfg = train_cfg(*SMALL, "model.tasks.vqa.route.fusion_depth=2")
    data = instantiate(cfg.data)
    data.setup("fit")
    model = build_model(cfg.model, {}).eval()
    batch = next(iter(data.val_dataloader()))
    with torch.no_grad():
        before = model(batch, "vqa")["logits"]
        batch["image"][1:] = torch.rand_like(batch["image"][1:])  # change every image but the first
        after = model(batch, "vqa")["logits"]
    assert torch.allclose(before[0], after[0], atol=1e-5)
    assert not torch.allclose(before[1:], after[1:], atol=1e-3)


def test_eval_scores_a_disk_dataset_with_the_checkpoint_vocabulary(train_cfg, tmp_path, data_dir):
    cfg = train_cfg(*SMALL, "trainer.max_epochs=1", "trainer.num_sanity_val_steps=0")
    cli.train(cfg)
    checkpoint = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=False)["VQADataModule"]["answers"]  # vocabularies travel along

    # another rendering seed, only a test split, and no image_id column: questions group by image bytes
    other = build_sort_of_clevr(train_images=0, validation_images=0, test_images=5, seed=9)["test"]
    disk = tmp_path / "other_sort_of_clevr"
    DatasetDict({"test": other.remove_columns("image_id")}).save_to_disk(str(disk))

    done = run_script(
        "eval.py", f"ckpt_path={checkpoint}", "data.source=disk", f"data.path={disk}",
        f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={data_dir}", "trainer.enable_progress_bar=false",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (eval_dir,) = (tmp_path / "logs" / "eval").iterdir()
    results = json.loads((eval_dir / "results.json").read_text())
    predictions = [json.loads(line) for line in (eval_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == len(other) == 100 == results["num_predictions"]  # one per question
    assert sorted(p["row"] for p in predictions) == list(range(100))
    assert {p["question"] for p in predictions} == set(other["question"])
    accuracy = sum(p["prediction"] == other[p["row"]]["answer"] for p in predictions) / 100
    assert results["test"]["test/vqa/acc"] == pytest.approx(accuracy, abs=1e-6)
    relational = [p for p in predictions if other[p["row"]]["question_type"] == "relational"]
    assert results["test"]["test/vqa/acc_relational"] == pytest.approx(
        sum(p["score"] for p in relational) / len(relational), abs=1e-6
    )


def test_concat_baseline_has_no_token_to_token_step(train_cfg):
    from tasks.vqa.model import GeometricRelationLayer

    for fusion, expected in (("cross", 1), ("concat", 0)):
        model = build_model(train_cfg(*SMALL, f"task.fusion={fusion}").model, {})
        assert sum(isinstance(m, GeometricRelationLayer) for m in model.modules()) == expected
