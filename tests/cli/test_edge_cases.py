"""Resume and evaluation edge cases (issue 10, point 4): each test failed before its fix."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import DatasetDict
from lightning.pytorch.callbacks import Callback
from tasks.image_classification.builder import build_digits
from tests.cli.test_train_eval import CrashAtStep
from tests.conftest import QUIET, ROOT, run_script

from attnlab import cli
from attnlab.checkpoints import restore_from_checkpoint

__all__ = ["CrashAtStep", "RecordBatches"]  # Hydra `_target_`s of the callbacks below


class RecordBatches(Callback):
    """Appends {step: sample indices} of every training batch to a JSON-lines file."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        with self.path.open("a") as handle:
            handle.write(json.dumps({"step": trainer.global_step, "index": batch["index"].tolist()}) + "\n")


def _recorded(path: Path) -> dict[int, list[int]]:
    return {row["step"]: row["index"] for row in map(json.loads, path.read_text().splitlines())}


def _callback(name: str, target: str, **kwargs) -> str:
    args = ", ".join(f"{k}: {v}" for k, v in kwargs.items())
    return f"+callbacks.{name}={{_target_: tests.cli.test_edge_cases.{target}, {args}}}"


def test_mid_epoch_resume_from_on_exception_continues_where_it_stopped(train_cfg, tmp_path):
    """Crash at step 7 (batch 2 of epoch 1), resume from on_exception.ckpt: steps 7-9 see the same
    samples as an uninterrupted run, and no batch of the epoch is replayed."""
    reference_log, crashed_log = tmp_path / "reference.jsonl", tmp_path / "crashed.jsonl"
    cli.train(train_cfg("debug=limit", "test=false", _callback("rec", "RecordBatches", path=reference_log), run="ref"))
    cfg = train_cfg("debug=limit", "test=false", _callback("rec", "RecordBatches", path=crashed_log),
                    _callback("crash", "CrashAtStep", step=7))
    with pytest.raises(RuntimeError, match="simulated crash"):
        cli.train(cfg)
    on_exception = Path(cfg.paths.output_dir) / "checkpoints" / "on_exception.ckpt"
    resumed = train_cfg("debug=limit", "test=false", _callback("rec", "RecordBatches", path=crashed_log),
                        f"ckpt_path={on_exception}")
    cli.train(resumed)
    reference, crashed = _recorded(reference_log), _recorded(crashed_log)
    assert sorted(reference) == sorted(crashed) == list(range(10))
    assert crashed == reference  # the resumed steps 7, 8, 9 read batches 2, 3, 4 of epoch 1
    assert json.loads((Path(resumed.paths.output_dir) / "results.json").read_text())["global_step"] == 10


def test_a_resumed_run_that_finishes_has_no_failed_marker(train_cfg):
    cfg = train_cfg("debug=limit", _callback("crash", "CrashAtStep", step=7))
    with pytest.raises(RuntimeError, match="simulated crash"):
        cli.train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    assert (run_dir / "FAILED").exists()
    cli.train(train_cfg("debug=limit", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"))
    assert (run_dir / "results.json").exists()
    assert not (run_dir / "FAILED").exists()
    assert "simulated crash" in (run_dir / "FAILED.earlier").read_text()  # the record is kept


def test_train_false_tests_the_checkpoint_weights_in_a_new_run_dir(tmp_path, data_dir):
    args = [*QUIET, "debug=limit", "trainer.max_epochs=1", f"paths.log_dir={tmp_path}", f"paths.data_dir={data_dir}"]
    done = run_script("train.py", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "image_classification").iterdir()
    before = {name: (run_dir / name).read_text() for name in ("results.json", "config.yaml")}
    trained = json.loads(before["results.json"])["test"]["test/image_classification/acc"]

    tested = run_script("train.py", *args, "train=false", f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}")
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert {name: (run_dir / name).read_text() for name in before} == before  # the original run is untouched
    (new_dir,) = [d for d in (tmp_path / "image_classification").iterdir() if d != run_dir]
    results = json.loads((new_dir / "results.json").read_text())
    assert results["test"]["test/image_classification/acc"] == pytest.approx(trained, abs=1e-6)  # not fresh weights


def _learning_rates(run_dir: Path) -> dict[int, float]:
    with (run_dir / "metrics.csv").open() as handle:
        return {int(row["step"]): float(row["lr-AdamW/pg1"]) for row in csv.DictReader(handle) if row.get("lr-AdamW/pg1")}


def test_resuming_with_more_epochs_keeps_the_original_schedule(train_cfg):
    """The schedule's length is fixed when the run starts: extra epochs continue at the floor, no LR jump."""
    cfg = train_cfg("debug=limit", "test=false", "trainer.log_every_n_steps=1")
    cli.train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    resumed = train_cfg("debug=limit", "test=false", "trainer.log_every_n_steps=1", "trainer.max_epochs=4",
                        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}")
    cli.train(resumed)
    rates = _learning_rates(run_dir)
    base, floor = cfg.model.optimizer.lr, cfg.model.optimizer.lr * cfg.model.scheduler.min_lr_ratio
    assert sorted(rates) == list(range(20))
    assert max(rates.values()) <= base and rates[9] > floor
    assert all(rates[s] == pytest.approx(floor, rel=1e-9) for s in range(10, 20)), rates  # no jump back up
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["lr_schedulers"][0]
    assert state["lr_lambdas"][0]["total_steps"] == 10


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory, data_dir) -> Path:
    from tests.conftest import compose_config

    out = tmp_path_factory.mktemp("ckpt") / "run"
    cli.train(compose_config("train", [*QUIET, "debug=limit", "trainer.max_epochs=1", "test=false"], out, data_dir))
    return out / "checkpoints" / "last.ckpt"


def test_ddp_evaluation_counts_every_test_item_once_and_writes_every_prediction(tmp_path, data_dir, digits_checkpoint):
    """7 test images on 2 processes: the distributed sampler would pad to 8 and only rank 0 would write."""
    disk = tmp_path / "seven"
    DatasetDict({"test": build_digits(seed=0)["test"].select(range(7))}).save_to_disk(str(disk))
    common = [f"ckpt_path={digits_checkpoint}", "data.source=disk", f"data.path={disk}", f"paths.data_dir={data_dir}",
              "trainer.enable_progress_bar=false", "data.batch_size=2"]
    outcomes = {}
    for name, trainer in (("single", "trainer=cpu"), ("ddp", "trainer=ddp_sim")):
        done = run_script("eval.py", *common, trainer, f"paths.log_dir={tmp_path / name}")
        assert done.returncode == 0, done.stderr[-3000:]
        (eval_dir,) = (tmp_path / name / "eval").iterdir()
        predictions = [json.loads(line) for line in (eval_dir / "predictions.jsonl").read_text().splitlines()]
        outcomes[name] = (json.loads((eval_dir / "results.json").read_text()), predictions)
    for results, predictions in outcomes.values():
        assert sorted(p["index"] for p in predictions) == list(range(7)) and results["num_predictions"] == 7
        accuracy = sum(p["prediction"] == p["target"] for p in predictions) / 7
        assert results["test"]["test/image_classification/acc"] == pytest.approx(accuracy, abs=1e-6)
    assert outcomes["ddp"][0]["test"]["test/image_classification/acc"] == pytest.approx(
        outcomes["single"][0]["test"]["test/image_classification/acc"], abs=1e-6
    )


def test_tasks_are_installed_and_a_checkpoint_restores_outside_the_repository(tmp_path, digits_checkpoint):
    """A notebook anywhere: import the task plugins and rebuild model + datamodule from a checkpoint."""
    code = (
        "import sys, torch; from attnlab.checkpoints import installed_tasks, restore_from_checkpoint\n"
        f"assert not any(p.rstrip('/') == {str(ROOT)!r} for p in sys.path), sys.path\n"
        "print(sorted(installed_tasks()))\n"
        f"model, data, cfg = restore_from_checkpoint({str(digits_checkpoint)!r})\n"
        "data.setup('test'); batch = next(iter(data.test_dataloader()))\n"
        "print(type(model).__name__, tuple(model(batch, cfg.task.name)['logits'].shape))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    tasks = sorted(p.stem for p in (ROOT / "conf" / "task").glob("*.yaml"))  # every task is an installed plugin
    assert str(tasks) in done.stdout
    assert "AttnLabModule (64, 10)" in done.stdout


def test_a_checkpoint_whose_task_code_is_missing_names_the_installed_plugins(tmp_path, digits_checkpoint):
    checkpoint = torch.load(digits_checkpoint, weights_only=False)
    checkpoint["hyper_parameters"]["run_config"]["data"]["_target_"] = "attnlab_missing_plugin.data.DigitsData"
    moved = tmp_path / "moved.ckpt"
    torch.save(checkpoint, moved)
    with pytest.raises(ModuleNotFoundError, match=r"installed task plugins: \{.*'image_classification': 'tasks.image_classification'"):
        restore_from_checkpoint(moved)
