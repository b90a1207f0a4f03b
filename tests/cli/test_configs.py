"""Every option of every config group composes, and the parts it configures instantiate."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from tests.conftest import ROOT

from attnlab.checkpoints import build_model
from attnlab.cli import _instantiate_all


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


@pytest.mark.parametrize("backbone", options("backbone"))
@pytest.mark.parametrize("task", options("task"))
def test_every_backbone_composes_with_every_task(train_cfg, task, backbone):
    cfg = train_cfg(f"task={task}", f"backbone={backbone}")
    if task in ("vqa", "translation", "summarization", "qa", "video", "asr") and backbone == "timm":  # token backbones only
        with pytest.raises(ValueError, match="use a token backbone"):
            build_model(cfg.model, {})
        return
    if task == "qa" and backbone in ("bigru", "conformer"):  # forgetting heads add a per-block attention bias
        with pytest.raises(ValueError, match="forget_heads=0 stick_heads=0 hop_weight=0 to use this backbone"):
            build_model(cfg.model, {})
        plain = ["model.tasks.qa.route.forget_heads=0", "model.tasks.qa.route.stick_heads=0", "model.tasks.qa.route.hop_weight=0"]
        build_model(train_cfg(f"task={task}", f"backbone={backbone}", *plain).model, {})
        return
    if task == "segmentation" and backbone in ("bigru", "conformer"):  # a feature pyramid needs maps from intermediate blocks
        with pytest.raises(ValueError, match="needs a backbone with forward_intermediates"):
            build_model(cfg.model, {})
        return
    if task == "video" and backbone in ("bigru", "conformer"):  # divided / space-only attention run transformer blocks
        with pytest.raises(ValueError, match="runs the shared transformer block by block"):
            build_model(cfg.model, {})
        return
    model = build_model(cfg.model, {})
    assert set(model.heads) == {cfg.task.name}
    assert model.backbone.dim > 0


@pytest.mark.parametrize("attention", options("attention"))
def test_every_attention_option_builds_a_working_model(train_cfg, attention):
    cfg = train_cfg(f"attention={attention}")
    model = build_model(cfg.model, {})
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    batch = next(iter(datamodule.val_dataloader()))
    logits = model(batch, cfg.task.name)["logits"]
    assert logits.shape == (len(batch["label"]), 10)


@pytest.mark.parametrize("trainer", options("trainer"))
def test_every_trainer_option(train_cfg, trainer):
    cfg = train_cfg(f"trainer={trainer}")
    if cfg.trainer.accelerator == "gpu":  # gpu / ddp: composed here, instantiated on GPU machines
        assert cfg.trainer.precision == "bf16-mixed"
        return
    trainer_obj = instantiate(cfg.trainer, logger=False)
    assert trainer_obj.num_devices == cfg.trainer.devices


@pytest.mark.parametrize("logger", options("logger"))
def test_every_logger_option(train_cfg, logger, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = train_cfg(f"logger={logger}")
    loggers = _instantiate_all(cfg.get("logger"))
    expected = {"csv": 1, "tensorboard": 1, "wandb": 1, "many": 3, "none": 0}[logger]
    assert len(loggers) == expected


@pytest.mark.parametrize("callbacks", options("callbacks"))
def test_every_callbacks_option(train_cfg, callbacks):
    cfg = train_cfg(f"callbacks={callbacks}", quiet=False)
    built = _instantiate_all(cfg.get("callbacks"))
    if callbacks == "default":
        names = {type(c).__name__ for c in built}
        assert {"ModelCheckpoint", "EarlyStopping", "LearningRateMonitor", "OnExceptionCheckpoint"} <= names
    elif callbacks == "none":
        assert built == []
    else:
        assert len(built) == 1


@pytest.mark.parametrize("group", ["debug", "experiment"])
def test_debug_and_experiment_overlays_compose(train_cfg, group):
    for option in options(group):
        task = [f"task={t}" for t in options("task") if option.startswith(t)][:1]  # experiments are per task
        cfg = train_cfg(*task, f"{group}={option}")
        instantiate(cfg.trainer, logger=False)
        build_model(cfg.model, {})


def test_local_overrides_are_optional_and_gitignored():
    assert (ROOT / "conf" / "local" / ".gitkeep").exists()
    assert "conf/local/*" in (ROOT / ".gitignore").read_text()


def test_unknown_task_lists_the_available_ones(train_cfg):
    with pytest.raises(MissingConfigException) as err:
        train_cfg("task=no_such_task")
    assert "image_classification" in str(err.value)


def test_unknown_backbone_lists_the_available_ones(train_cfg):
    with pytest.raises(MissingConfigException) as err:
        train_cfg("backbone=huge")
    assert "tiny" in str(err.value) and "timm" in str(err.value)


def test_eval_config_composes(eval_cfg):
    cfg = eval_cfg("ckpt_path=x.ckpt", "data.source=disk", "data.path=/tmp/somewhere")
    assert cfg.data.source == "disk" and Path(cfg.paths.output_dir).name == "eval"
