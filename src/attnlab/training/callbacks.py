"""Small Lightning callbacks the stock set lacks."""

from __future__ import annotations

import time

import lightning as L


class ElapsedTime(L.Callback):
    """Logs ``time/fit_minutes`` (wall-clock since fit start, this run) at every validation, so the
    metrics file holds accuracy-versus-time curves without guessing from step counts."""

    def __init__(self) -> None:
        self.start: float | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.start is not None and not trainer.sanity_checking:
            minutes = (time.perf_counter() - self.start) / 60.0
            pl_module.log("time/fit_minutes", minutes, on_step=False, on_epoch=True, batch_size=1)
