"""Logger factories that need more than a `_target_` (W&B offline detection and run resumption)."""

from __future__ import annotations

import csv
import hashlib
import netrc
import os
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


def wandb_api_key_configured() -> bool:
    """True when `WANDB_API_KEY` is set or `wandb login` stored a key in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_logger(
    *,
    save_dir: str,
    project: str = "attnlab",
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    offline: bool | None = None,
    log_model: bool = False,
) -> WandbLogger:
    """A WandbLogger that is offline when no API key is configured (``offline: null``).

    The run id is derived from the run directory, so resuming into the same directory
    (``ckpt_path=<run>/checkpoints/last.ckpt``) continues the same W&B run.
    """
    offline = not wandb_api_key_configured() if offline is None else offline
    run_id = hashlib.sha1(str(Path(save_dir).resolve()).encode()).hexdigest()[:16]
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        save_dir=save_dir,
        project=project,
        name=name,
        group=group,
        tags=list(tags or []),
        offline=offline,
        log_model=False if offline else log_model,
        id=run_id,
        resume="allow",
    )


class _AppendingExperimentWriter(ExperimentWriter):
    """Keeps an existing metrics.csv (Lightning's writer deletes it) so a resumed run appends to it."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):  # continue with the existing header's columns
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(next(csv.reader(file), []))


class ResumableCSVLogger(CSVLogger):
    """CSVLogger writing <save_dir>/metrics.csv; resuming into the same run directory appends rows."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
