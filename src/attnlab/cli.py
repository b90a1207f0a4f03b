"""Bodies of `train.py` and `eval.py`: importable and testable without Hydra's decorator."""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from attnlab.checkpoints import check_checkpoint_task, load_checkpoint
from attnlab.config import to_plain  # also registers the resolvers

log = logging.getLogger(__name__)


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every `_target_` entry of a callbacks/logger group (null entries are switched off)."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if node is not None and "_target_" in node]


def _build_model(model_cfg: DictConfig, run_config: dict[str, Any]) -> L.LightningModule:
    """Instantiate the module; the run config is passed afterwards so Hydra does not instantiate it."""
    build = instantiate(model_cfg, _partial_=True, _convert_="all")
    return build(run_config=run_config)


@rank_zero_only
def _write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)  # atomic: a results file is either complete or absent


@rank_zero_only
def _write_config(path: Path, cfg: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(cfg))


@rank_zero_only
def _write_predictions(path: Path, batches: list[list[dict[str, Any]]]) -> int:
    tmp = path.with_suffix(".jsonl.tmp")
    count = 0
    with tmp.open("w") as handle:
        for batch in batches:
            for record in batch:
                handle.write(json.dumps(record) + "\n")
                count += 1
    tmp.replace(path)
    return count


@rank_zero_only
def _mark_failed(output_dir: Path, err: BaseException) -> None:
    """A failed run gets FAILED (and never results.json), so it cannot look complete."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "FAILED").write_text("".join(traceback.format_exception(err)))


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, torch.Tensor)) and torch.as_tensor(v).numel() == 1}


def _close_loggers(trainer: L.Trainer) -> None:
    """Flush every logger; W&B runs are finished so offline runs hold their summary and config."""
    finished_wandb = False
    for logger in trainer.loggers:
        logger.finalize("success")
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish()
            finished_wandb = True
    if finished_wandb:
        import wandb  # only here: importing wandb costs about a second

        # finish() can return before W&B's service has written the run's record log; teardown waits
        # for it (as the atexit hook would), so the files are complete when train() returns
        wandb.teardown()


def _marking_failure(run: Callable[[DictConfig, Path], Any], cfg: DictConfig) -> Any:
    """run(cfg, output_dir); a failure leaves FAILED in the output directory and is re-raised."""
    output_dir = Path(cfg.paths.output_dir)
    try:
        return run(cfg, output_dir)
    except BaseException as err:
        _mark_failed(output_dir, err)
        raise


def train(cfg: DictConfig) -> float | None:
    """Fit, test the best checkpoint, write results.json; returns the monitored metric (for sweeps)."""
    return _marking_failure(_train, cfg)


def _train(cfg: DictConfig, output_dir: Path) -> float | None:
    if cfg.get("ckpt_path"):  # resuming: check the checkpoint before anything is built
        check_checkpoint_task(load_checkpoint(cfg.ckpt_path), cfg.ckpt_path, cfg.task.name)
    L.seed_everything(cfg.seed, workers=True)
    run_config = to_plain(cfg)
    datamodule = instantiate(cfg.data)
    model = _build_model(cfg.model, run_config)
    callbacks = _instantiate_all(cfg.get("callbacks"))
    loggers = _instantiate_all(cfg.get("logger"))
    if not loggers:  # logger=none: a learning-rate monitor has nowhere to write
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    _write_config(output_dir / "config.yaml", run_config)
    best: str | None = None
    fit_time = 0.0
    try:
        if cfg.get("train", True):
            start = time.perf_counter()
            trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
            fit_time = time.perf_counter() - start
        train_metrics = _scalars(trainer.callback_metrics)
        test_metrics: dict[str, float] = {}
        if cfg.get("test", True):
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else None
            if not best:
                log.warning("no best checkpoint (fast_dev_run or checkpointing off): testing the current weights")
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None)
            test_metrics = _scalars(trainer.callback_metrics)
            test_metrics = {k: v for k, v in test_metrics.items() if k.startswith("test/")}
    finally:
        _close_loggers(trainer)
    results = {
        "task": cfg.task.name,
        "monitor": cfg.task.monitor,
        "best_checkpoint": best,
        "epochs": trainer.current_epoch,
        "fit_time_s": round(fit_time, 1),  # wall-clock of trainer.fit (training + validation)
        "global_step": trainer.global_step,
        "val": {k: v for k, v in train_metrics.items() if k.startswith("val/")},
        "test": test_metrics,
    }
    _write_json(output_dir / "results.json", results)
    return train_metrics.get(cfg.task.monitor)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Rebuild the model from the checkpoint's stored config, test it, write results and predictions."""
    return _marking_failure(_evaluate, cfg)


def _data_overrides(cfg: DictConfig) -> list[str]:
    """The data.* keys the user overrode on the command line (Hydra records every override)."""
    overrides = cfg.hydra.overrides.task if "hydra" in cfg else HydraConfig.get().overrides.task
    keys = [override.split("=", 1)[0].lstrip("+~") for override in overrides]
    return [key for key in keys if key.startswith("data.")]


def _evaluate(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    if not cfg.get("ckpt_path"):
        raise ValueError("eval.py needs ckpt_path=<run dir>/checkpoints/best.ckpt (or last.ckpt)")
    checkpoint = load_checkpoint(cfg.ckpt_path)
    if cfg.get("task"):  # `task=<name>` on the command line guards against a checkpoint of another task
        check_checkpoint_task(checkpoint, cfg.ckpt_path, cfg.task.name)
    run_cfg = OmegaConf.create(checkpoint["hyper_parameters"]["run_config"])
    with open_dict(run_cfg):
        for key in _data_overrides(cfg):  # eval-time data.* overrides replace the stored values
            OmegaConf.update(run_cfg, key, OmegaConf.select(cfg, key), merge=False)
        run_cfg.data.data_dir = cfg.paths.data_dir  # caches live on this machine
        backbone = run_cfg.model.backbone
        if "pretrained" in backbone:  # the weights come from the checkpoint, never the hub
            backbone.pretrained, backbone.pretrained_file = False, None
    L.seed_everything(run_cfg.seed, workers=True)
    datamodule = instantiate(run_cfg.data)
    model = _build_model(run_cfg.model, OmegaConf.to_container(run_cfg))
    try:
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"checkpoint {cfg.ckpt_path} does not fit the model rebuilt from its own config: {str(err).splitlines()[0]}"
        ) from err
    datamodule_state = checkpoint.get(type(datamodule).__qualname__)
    if datamodule_state:  # e.g. the vocabularies the model was trained with
        datamodule.load_state_dict(datamodule_state)
    del checkpoint
    trainer: L.Trainer = instantiate(cfg.trainer, logger=False, callbacks=_instantiate_all(cfg.get("callbacks")))
    trainer.test(model, datamodule=datamodule)
    metrics = {k: v for k, v in _scalars(trainer.callback_metrics).items() if k.startswith("test/")}
    predictions = trainer.predict(model, datamodule=datamodule)
    count = _write_predictions(output_dir / "predictions.jsonl", predictions) if predictions else 0
    _write_json(
        output_dir / "results.json",
        {"task": run_cfg.task.name, "ckpt_path": str(cfg.ckpt_path), "data": to_plain(run_cfg.data), "test": metrics,
         "num_predictions": count},
    )
    return metrics
