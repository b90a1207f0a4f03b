"""CSV, TensorBoard and W&B (offline) runs contain the logged metrics and the config."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from attnlab import cli
from attnlab.training.loggers import wandb_api_key_configured


def test_many_loggers_record_metrics(train_cfg, monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no key configured
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert not wandb_api_key_configured()
    cfg = train_cfg("logger=many", "debug=limit", "trainer.max_epochs=1", "trainer.log_every_n_steps=1")
    cli.train(cfg)
    run_dir = Path(cfg.paths.output_dir)

    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/image_classification/acc", "train/image_classification/loss", "test/image_classification/acc"} <= set(header)

    tags = EventAccumulator(str(run_dir / "tensorboard")).Reload().Tags()["scalars"]
    assert "val/image_classification/acc" in tags and "train/image_classification/loss" in tags

    # the offline run's record log (synced later by `wandb sync`) holds history, summary and config
    (record_log,) = (run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    records = record_log.read_bytes()
    for key in (b"val/image_classification/acc", b"train/image_classification/loss", b"test/image_classification/acc",
                b"run_config", b"num_heads"):
        assert key in records, key
