"""Bodies of `train.py`, `eval.py` and `predict.py`: importable and testable without Hydra's decorator."""

from __future__ import annotations

import io
import json
import logging
import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from attnlab.checkpoints import build_model, check_checkpoint_task, load_checkpoint, restore_from_checkpoint
from attnlab.config import to_plain  # also registers the resolvers
from attnlab.training.head import FILES_KEY

log = logging.getLogger(__name__)


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every `_target_` entry of a callbacks/logger group (null entries are switched off)."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if node is not None and "_target_" in node]


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


def _gather_records(trainer: L.Trainer, batches: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every process's prediction records (under DDP each predicts its own share of the split), rank by rank."""
    records = [record for batch in batches for record in batch]
    if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered: list[list[dict[str, Any]]] = [[] for _ in range(trainer.world_size)]
        torch.distributed.all_gather_object(gathered, records)
        records = [record for part in gathered for record in part]
    return records


@rank_zero_only
def _write_predictions(path: Path, records: list[dict[str, Any]]) -> None:
    """predictions.jsonl, and the files records carry under FILES_KEY beside it (the record keeps their path)."""
    for record in records:
        for field, (relative, data) in record.pop(FILES_KEY, {}).items():
            target = path.parent / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            record[field] = relative
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    tmp.replace(path)


@rank_zero_only
def _mark_failed(output_dir: Path, err: BaseException) -> None:
    """A failed run gets FAILED (and never results.json), so it cannot look complete."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "FAILED").write_text("".join(traceback.format_exception(err)))


@rank_zero_only
def _archive_earlier_failure(output_dir: Path) -> None:
    """A resumed run starts clean: an earlier FAILED moves (appended) to FAILED.earlier, kept for the record."""
    failed = output_dir / "FAILED"
    if failed.exists():
        with (output_dir / "FAILED.earlier").open("a") as earlier:
            earlier.write(failed.read_text())
        failed.unlink()


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
    if cfg.get("ckpt_path"):  # resuming (or testing): check the checkpoint before anything is built
        check_checkpoint_task(load_checkpoint(cfg.ckpt_path), cfg.ckpt_path, cfg.task.name)
    _archive_earlier_failure(output_dir)
    L.seed_everything(cfg.seed, workers=True)
    run_config = to_plain(cfg)
    datamodule = instantiate(cfg.data)
    model = build_model(cfg.model, run_config)
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
            if cfg.get("train", True):
                best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else None
                if not best:
                    log.warning("no best checkpoint (fast_dev_run or checkpointing off): testing the current weights")
            else:  # train=false: test the given checkpoint's weights (eval.py also rebuilds its config)
                best = cfg.get("ckpt_path")
                if not best:
                    log.warning("train=false without ckpt_path: testing freshly initialised weights")
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
    overrides = {key: OmegaConf.select(cfg, key) for key in _data_overrides(cfg)}  # eval-time data.* keys win
    model, datamodule, run_cfg = restore_from_checkpoint(
        cfg.ckpt_path,
        data_overrides=overrides,
        data_dir=cfg.paths.data_dir,  # caches live on this machine
        expected_task=cfg.task.name if cfg.get("task") else None,  # `task=<name>` guards against another task's
    )
    trainer: L.Trainer = instantiate(cfg.trainer, logger=False, callbacks=_instantiate_all(cfg.get("callbacks")))
    trainer.test(model, datamodule=datamodule)
    metrics = {k: v for k, v in _scalars(trainer.callback_metrics).items() if k.startswith("test/")}
    records = _gather_records(trainer, trainer.predict(model, datamodule=datamodule) or [])
    count = len(records)
    _write_predictions(output_dir / "predictions.jsonl", records)
    _write_json(
        output_dir / "results.json",
        {"task": run_cfg.task.name, "ckpt_path": str(cfg.ckpt_path), "data": to_plain(run_cfg.data), "test": metrics,
         "num_predictions": count},
    )
    return metrics


# keys of conf/predict.yaml that are not task inputs; every other top-level key is passed to the
# task's predictor as an option (e.g. question="...")
_PREDICT_KEYS = {"ckpt_path", "input", "viz", "viz_max", "task", "batch_size", "device", "paths", "hydra"}


def predict(cfg: DictConfig) -> list[dict[str, Any]]:
    """Run a checkpoint on raw inputs: predictions.jsonl, a logged table and, with viz=true, attention PNGs."""
    return _marking_failure(_predict, cfg)


def _predict(cfg: DictConfig, output_dir: Path) -> list[dict[str, Any]]:
    from attnlab.analysis.heatmaps import FIGURE_DPI
    from attnlab.training.predictor import predictor_for, run_predictor

    if not cfg.get("ckpt_path"):
        raise ValueError("predict.py needs ckpt_path=<run dir>/checkpoints/best.ckpt (or last.ckpt)")
    options = {k: cfg[k] for k in cfg if k not in _PREDICT_KEYS and not OmegaConf.is_config(cfg._get_node(k))}
    options = {k: v for k, v in options.items() if v is not None}  # task inputs given (question=..., context=...)
    if cfg.get("input") in (None, "") and not options:
        raise ValueError("predict.py needs input=<file | directory | text | saved dataset directory> (or the task's "
                         "inputs, e.g. qa: context=\"...\" question=\"...\")")
    model, datamodule, run_cfg = restore_from_checkpoint(
        cfg.ckpt_path,
        data_dir=cfg.paths.data_dir,
        expected_task=cfg.task.name if cfg.get("task") else None,
    )
    predictor = predictor_for(run_cfg.task.name, datamodule=datamodule)
    # task inputs are the top-level scalars (question=...); `task=<name>` also composes that task's config groups
    dataset, names = predictor.read("" if cfg.get("input") is None else str(cfg.input), options)
    loader = torch.utils.data.DataLoader(
        datamodule.wrap_split(dataset, "predict"), batch_size=int(cfg.batch_size), collate_fn=datamodule.collate
    )
    device = "cuda" if cfg.device == "auto" and torch.cuda.is_available() else cfg.device.replace("auto", "cpu")
    model = model.to(device).eval()
    records: list[dict[str, Any]] = []
    pictures: list[str] = []
    staging = output_dir / ".predict-incomplete"  # pictures land here first: nothing half-written is left
    staging.mkdir(parents=True, exist_ok=True)
    try:
        for batch in loader:
            draw = cfg.viz and len(pictures) < cfg.viz_max  # pictures of the first viz_max predictions only
            batch_records, figures = run_predictor(
                predictor, model, move_data_to_device(batch, device), names=names, draw=draw
            )
            records += batch_records
            for stem, figure in figures[: cfg.viz_max - len(pictures)]:
                figure.savefig(staging / f"{stem}.png", dpi=FIGURE_DPI)
                pictures.append(f"{stem}.png")
        for name in pictures:
            (staging / name).replace(output_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _write_predictions(output_dir / "predictions.jsonl", records)
    _log_predictions(records, output_dir, pictures)
    return records


@rank_zero_only
def _log_predictions(records: list[dict[str, Any]], output_dir: Path, pictures: list[str]) -> None:
    """A short table of the first predictions, rendered by rich into the log (console and predict.log)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(records)} predictions -> {output_dir / 'predictions.jsonl'}")
    columns = [c for c in ("input", "question", "prediction", "prediction_text", "confidence", "target") if any(c in r for r in records)]
    for column in columns:
        table.add_column(column, overflow="fold")
    for record in records[:20]:
        table.add_row(*(str(record.get(c, "")) for c in columns))
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(table)
    if len(records) > 20:
        console.print(f"... {len(records) - 20} more in predictions.jsonl")
    if pictures:
        console.print(f"{len(pictures)} attention picture(s) in {output_dir}")
    log.info("\n%s", console.export_text())
