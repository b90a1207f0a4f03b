"""Bad input gets an error naming the file, column or sample and the fix; no run looks complete."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import DatasetDict, Image
from tasks.image_classification.builder import build_digits
from tests.conftest import run_script

from attnlab import cli


def _assert_incomplete(run_dir: Path) -> None:
    assert not (run_dir / "results.json").exists()
    assert (run_dir / "FAILED").exists()


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory, data_dir) -> Path:
    """A real 1-epoch checkpoint (few batches)."""
    from tests.conftest import QUIET, compose_config

    out = tmp_path_factory.mktemp("ckpt") / "run"
    cfg = compose_config("train", [*QUIET, "debug=limit", "trainer.max_epochs=1", "test=false"], out, data_dir)
    cli.train(cfg)
    return out / "checkpoints" / "last.ckpt"


def test_missing_checkpoint(eval_cfg, tmp_path):
    cfg = eval_cfg(f"ckpt_path={tmp_path / 'nope.ckpt'}")
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        cli.evaluate(cfg)
    _assert_incomplete(Path(cfg.paths.output_dir))


def test_corrupt_checkpoint(eval_cfg, tmp_path, trained_checkpoint):
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(trained_checkpoint.read_bytes()[:5000])  # a truncated copy
    cfg = eval_cfg(f"ckpt_path={broken}")
    with pytest.raises(ValueError, match="broken.ckpt is unreadable or corrupt"):
        cli.evaluate(cfg)
    _assert_incomplete(Path(cfg.paths.output_dir))


def test_checkpoint_of_another_task(eval_cfg, train_cfg, tmp_path, trained_checkpoint):
    state = torch.load(trained_checkpoint, weights_only=False)
    state["hyper_parameters"]["run_config"]["task"]["name"] = "vqa"
    other = tmp_path / "vqa.ckpt"
    torch.save(state, other)
    cfg = eval_cfg(f"ckpt_path={other}", "task=image_classification")
    with pytest.raises(ValueError, match="trained for task 'vqa', not 'image_classification'"):
        cli.evaluate(cfg)
    _assert_incomplete(Path(cfg.paths.output_dir))
    resume = train_cfg(f"ckpt_path={other}", run="resume")  # resuming training from it fails the same way
    with pytest.raises(ValueError, match="trained for task 'vqa'"):
        cli.train(resume)
    _assert_incomplete(Path(resume.paths.output_dir))


def test_checkpoint_without_run_config(eval_cfg, tmp_path, trained_checkpoint):
    state = torch.load(trained_checkpoint, weights_only=False)
    del state["hyper_parameters"]
    foreign = tmp_path / "foreign.ckpt"
    torch.save(state, foreign)
    with pytest.raises(ValueError, match="not written by attnlab"):
        cli.evaluate(eval_cfg(f"ckpt_path={foreign}"))


def test_dataset_missing_a_schema_column(train_cfg, tmp_path):
    build_digits().remove_columns("label").save_to_disk(str(tmp_path / "nolabel"))
    cfg = train_cfg("data.source=disk", f"data.path={tmp_path / 'nolabel'}", "debug=fdr")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['label'\].*data.column_map"):
        cli.train(cfg)
    _assert_incomplete(Path(cfg.paths.output_dir))


def test_unreadable_image_names_the_sample(train_cfg, tmp_path):
    digits = build_digits()
    test = digits["test"].cast_column("image", Image(decode=False))

    def corrupt(row, index):
        if index == 7:
            row["image"] = {"bytes": b"not a png", "path": None}
        return row

    test = test.map(corrupt, with_indices=True).cast_column("image", Image())
    digits = DatasetDict({**digits, "test": test})
    digits.save_to_disk(str(tmp_path / "corrupt"))
    cfg = train_cfg("data.source=disk", f"data.path={tmp_path / 'corrupt'}", "train=false", "data.batch_size=8")
    with pytest.raises(ValueError, match="sample 7 of split 'test'"):
        cli.train(cfg)
    _assert_incomplete(Path(cfg.paths.output_dir))


def test_unknown_task_on_the_command_line_lists_options(tmp_path):
    done = run_script("train.py", "task=nonexistent", f"paths.log_dir={tmp_path}")
    assert done.returncode != 0
    assert "Available options in 'task'" in done.stderr and "image_classification" in done.stderr
    assert not any(tmp_path.rglob("results.json"))
