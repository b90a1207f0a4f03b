"""Every task x every debug preset x the DDP trainer, parametrized over conf/task/ so new tasks are covered.

A new task adds its tiny builder parameters to `TINY_TASK` (and model variants to `TASK_VARIANTS`)
in tests/conftest.py; `test_every_task_has_tiny_parameters` fails until it does.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from tests.conftest import QUIET, ROOT, TASK_VARIANTS, TINY_TASK, run_script

from attnlab import cli
from attnlab.checkpoints import build_model

TASKS = sorted(p.stem for p in (ROOT / "conf" / "task").glob("*.yaml"))
DEBUG_PRESETS = sorted(p.stem for p in (ROOT / "conf" / "debug").glob("*.yaml"))


def test_every_task_has_tiny_parameters():
    assert sorted(TINY_TASK) == TASKS, "add the new task's tiny builder overrides to TINY_TASK in tests/conftest.py"
    assert sorted(TASK_VARIANTS) == TASKS, "add the new task's model variants to TASK_VARIANTS in tests/conftest.py"


@pytest.mark.parametrize("preset", DEBUG_PRESETS)
@pytest.mark.parametrize("task", TASKS)
def test_every_debug_preset_instantiates_data_model_and_trainer(train_cfg, task, preset):
    cfg = train_cfg(*TINY_TASK[task], f"debug={preset}")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    model = build_model(cfg.model, {})
    trainer = instantiate(cfg.trainer, logger=False, callbacks=cli._instantiate_all(cfg.get("callbacks")))
    datamodule.trainer = trainer
    batch = next(iter(datamodule.train_dataloader()))
    outputs = model(batch, cfg.task.name)
    assert torch.isfinite(model.heads[cfg.task.name].loss(outputs, batch))


@pytest.mark.parametrize(
    ("task", "variant"), [(task, variant) for task in TASKS for variant in TASK_VARIANTS[task]], ids=str
)
def test_every_trainable_parameter_gets_a_gradient(train_cfg, task, variant):
    """DDP (find_unused_parameters=False) fails on any trainable parameter left out of the loss."""
    cfg = train_cfg(*TINY_TASK[task], *variant)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    model = build_model(cfg.model, {})
    batch = next(iter(datamodule.train_dataloader()))
    model.heads[cfg.task.name].loss(model(batch, cfg.task.name), batch).backward()
    unused = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, f"{task} {variant}: parameters without a gradient: {unused}"


@pytest.mark.parametrize("task", TASKS)
def test_ddp_sim_trains_three_steps_and_validates(task, tmp_path, data_dir):
    done = run_script(
        "train.py", *TINY_TASK[task], "trainer=ddp_sim", "debug=limit", "trainer.max_epochs=1",
        "trainer.limit_train_batches=3", *QUIET, f"paths.log_dir={tmp_path}", f"paths.data_dir={data_dir}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp_path / task).iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["global_step"] == 3
    assert f"val/{task}/loss" in results["val"] and results["test"]


def _logged(run_dir: Path, key: str) -> list[float]:
    with (run_dir / "metrics.csv").open() as handle:
        return [float(row[key]) for row in csv.DictReader(handle) if row.get(key)]


@pytest.mark.parametrize("task", TASKS)
def test_debug_overfit_drives_the_loss_down(train_cfg, task):
    cfg = train_cfg(*TINY_TASK[task], "debug=overfit", "trainer.log_every_n_steps=1", "test=false",
                    "callbacks.model_checkpoint=null", "callbacks.on_exception_checkpoint=null")
    cli.train(cfg)
    losses = _logged(Path(cfg.paths.output_dir), f"train/{task}/loss")
    assert len(losses) == cfg.trainer.max_epochs
    assert losses[-1] < 0.1 * losses[0], losses


@pytest.mark.parametrize("task", TASKS)
def test_overfitting_serves_one_fixed_batch(train_cfg, task):
    cfg = train_cfg(*TINY_TASK[task], "debug=overfit")
    datamodule = instantiate(cfg.data)
    datamodule.trainer = instantiate(cfg.trainer, logger=False)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    first = next(iter(loader))
    loader.sampler.set_epoch(1) if hasattr(loader.sampler, "set_epoch") else None
    again = next(iter(loader))
    for key, value in first.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, again[key]), key
