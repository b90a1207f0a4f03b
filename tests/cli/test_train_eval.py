"""End-to-end: train, test, eval on the checkpoint, resume, multi-process DDP on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from tests.conftest import QUIET, run_script

from attnlab import cli

ONE_EPOCH = ["trainer.max_epochs=1", "trainer.num_sanity_val_steps=0"]


def test_fast_dev_run_tiny(train_cfg):
    cfg = train_cfg("debug=fdr", "backbone=tiny")
    cli.train(cfg)
    results = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    assert 0.0 <= results["test"]["test/image_classification/acc"] <= 1.0
    assert results["global_step"] == 1


def test_fast_dev_run_timm(train_cfg):
    cfg = train_cfg("debug=fdr", "backbone=timm", "backbone.model_name=resnet18", "backbone.image_size=32")
    cli.train(cfg)
    assert (Path(cfg.paths.output_dir) / "results.json").exists()


def test_train_one_epoch_then_eval_script_reproduces_test_accuracy(train_cfg, tmp_path, data_dir):
    cfg = train_cfg(*ONE_EPOCH)
    cli.train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    results = json.loads((run_dir / "results.json").read_text())
    assert {"config.yaml", "metrics.csv", "results.json"} <= {p.name for p in run_dir.iterdir()}
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} >= {"last.ckpt", "best.ckpt"}
    trained_acc = results["test"]["test/image_classification/acc"]

    done = run_script(
        "eval.py", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.data_dir={data_dir}", "trainer.enable_progress_bar=false",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (eval_dir,) = (tmp_path / "logs" / "eval").iterdir()
    eval_results = json.loads((eval_dir / "results.json").read_text())
    assert abs(eval_results["test"]["test/image_classification/acc"] - trained_acc) <= 1e-3
    predictions = [json.loads(line) for line in (eval_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 360 == eval_results["num_predictions"]  # the digits test split
    accuracy = sum(p["prediction"] == p["target"] for p in predictions) / len(predictions)
    assert abs(accuracy - trained_acc) <= 1e-3


def test_resume_writes_next_epoch_and_never_beyond_max_epochs(train_cfg):
    first = train_cfg(*ONE_EPOCH, "debug=limit", "trainer.max_epochs=1")
    cli.train(first)
    last = Path(first.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["epoch"] == 0

    resumed = train_cfg("debug=limit", "trainer.max_epochs=2", f"ckpt_path={last}")
    cli.train(resumed)
    state = torch.load(last, weights_only=False)
    assert state["epoch"] == 1
    assert state["global_step"] == 10  # 5 batches x 2 epochs: the first epoch was not repeated
    assert state["lr_schedulers"] and state["optimizer_states"][0]["state"]

    again = train_cfg("debug=limit", "trainer.max_epochs=2", f"ckpt_path={last}")
    cli.train(again)  # already at max_epochs: nothing more is trained
    assert torch.load(last, weights_only=False)["epoch"] == 1


def test_resume_continues_in_the_checkpoints_run_dir(tmp_path, data_dir):
    args = [*QUIET, "debug=limit", f"paths.log_dir={tmp_path}", f"paths.data_dir={data_dir}"]
    done = run_script("train.py", *args, "trainer.max_epochs=1")
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "image_classification").iterdir()
    last = run_dir / "checkpoints" / "last.ckpt"
    resumed = run_script("train.py", *args, "trainer.max_epochs=2", f"ckpt_path={last}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [p.name for p in (tmp_path / "image_classification").iterdir()] == [run_dir.name]
    assert torch.load(last, weights_only=False)["epoch"] == 1
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    epoch_column = rows[0].split(",").index("epoch")
    assert {row.split(",")[epoch_column] for row in rows[1:]} >= {"0", "1"}  # both runs' rows kept


def test_ddp_sim_trains_one_epoch_with_one_run_dir(tmp_path, data_dir):
    done = run_script(
        "train.py", "trainer=ddp_sim", "trainer.max_epochs=1", "trainer.num_sanity_val_steps=0", *QUIET,
        f"paths.log_dir={tmp_path}", f"paths.data_dir={data_dir}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run_dirs = list((tmp_path / "image_classification").iterdir())
    assert len(run_dirs) == 1, run_dirs
    checkpoints = sorted(p.name for p in (run_dirs[0] / "checkpoints").iterdir())
    assert checkpoints == ["best.ckpt", "last.ckpt"]
    results = json.loads((run_dirs[0] / "results.json").read_text())
    assert results["epochs"] == 1 and results["test"]
    assert results["global_step"] == 10  # a full epoch: 1,257 images / (2 processes x 64) per step
    assert len(list(tmp_path.rglob("checkpoints"))) == 1


def test_overfit_one_batch_drives_loss_down(train_cfg):
    cfg = train_cfg("debug=overfit", "trainer.log_every_n_steps=1", "test=false", "callbacks.model_checkpoint=null",
                    "callbacks.on_exception_checkpoint=null")
    cli.train(cfg)
    metrics = (Path(cfg.paths.output_dir) / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    column = header.index("train/image_classification/loss")
    losses = [float(row.split(",")[column]) for row in metrics[1:] if row.split(",")[column]]
    assert len(losses) == 50 and losses[-1] < 0.1 * losses[0], losses


class CrashAtStep(Callback):
    """Raises inside training step `step` (simulates a node failure mid-epoch)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


def test_crash_mid_run_leaves_resumable_checkpoints(train_cfg):
    crash = "+callbacks.crash={_target_: tests.cli.test_train_eval.CrashAtStep, step: 7}"
    cfg = train_cfg("debug=limit", "trainer.max_epochs=2", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        cli.train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    assert (run_dir / "FAILED").exists() and not (run_dir / "results.json").exists()
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 0  # epoch 0 completed
    assert torch.load(run_dir / "checkpoints" / "on_exception.ckpt", weights_only=False)["global_step"] == 7

    resumed = train_cfg("debug=limit", "trainer.max_epochs=2", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}")
    cli.train(resumed)
    assert json.loads((Path(resumed.paths.output_dir) / "results.json").read_text())["global_step"] == 10


def test_multirun_sweep_writes_one_run_dir_per_job(tmp_path, data_dir):
    done = run_script("train.py", "-m", "debug=fdr", "seed=1,2", *QUIET, f"paths.log_dir={tmp_path}",
                      f"paths.data_dir={data_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    results = sorted(tmp_path.glob("image_classification/multirun/*/*/results.json"))
    assert [p.parent.name for p in results] == ["0", "1"]
