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


class AttentionMaps(L.Callback):
    """Draws the task predictors' attention pictures for a fixed set of validation rows every N epochs
    and logs them as images to TensorBoard and W&B (offline W&B included); with neither logger they are
    saved under ``<run dir>/attention/``. The same pictures as ``predict.py viz=true``.

    Args:
        every_n_epochs: draw after validation of epochs 0, N, 2N, ...
        num_rows: validation rows drawn (the first ones, so every epoch shows the same samples; for
            VQA a row is one question about an image).
        save_dir: also save the PNGs here (None: only log them, or save under the run dir when no
            image-capable logger is configured).
    """

    def __init__(self, *, every_n_epochs: int = 5, num_rows: int = 4, save_dir: str | None = None) -> None:
        if every_n_epochs < 1 or num_rows < 1:
            raise ValueError("callbacks.attention_maps.every_n_epochs and num_rows must be >= 1")
        self.every_n_epochs, self.num_rows, self.save_dir = every_n_epochs, num_rows, save_dir

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.current_epoch % self.every_n_epochs or not trainer.is_global_zero:
            return
        figures = []
        for task in pl_module.task_names:
            figures += [(f"attention/{task}/{name}", figure) for name, figure in self._draw(trainer, pl_module, task)]
        self._log(trainer, figures)

    def _draw(self, trainer: L.Trainer, pl_module: L.LightningModule, task: str) -> list:
        from lightning.fabric.utilities.apply_func import move_data_to_device

        from attnlab.training.predictor import predictor_for, run_predictor

        datamodule = trainer.datamodule
        if isinstance(datamodule, dict) or not getattr(datamodule, "raw_splits", None):
            return []
        rows = datamodule.raw_splits["validation"]
        rows = rows.select(range(min(self.num_rows, len(rows))))
        predictor = predictor_for(task, datamodule=datamodule)
        predictor.remember(rows)
        split = datamodule.wrap_split(rows, "validation")
        batch = move_data_to_device(datamodule.collate([split[i] for i in range(len(split))]), pl_module.device)
        names = [f"validation[{i}]" for i in range(len(rows))]
        was_training = pl_module.training
        pl_module.eval()
        try:
            return run_predictor(predictor, pl_module, batch, names=names, draw=True)[1]
        finally:
            pl_module.train(was_training)

    def _log(self, trainer: L.Trainer, figures: list) -> None:
        from pathlib import Path

        from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

        from attnlab.analysis.heatmaps import FIGURE_DPI, figure_pixels

        step, logged = trainer.global_step, False
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                for tag, figure in figures:
                    logger.experiment.add_figure(tag, figure, global_step=step, close=False)
                logged = True
            elif isinstance(logger, WandbLogger):
                if figures:
                    images = [figure_pixels(figure) for _, figure in figures]
                    logger.log_image(key="attention", images=images, caption=[tag for tag, _ in figures], step=step)
                logged = True
        folder = self.save_dir or (None if logged else str(Path(trainer.default_root_dir) / "attention"))
        if folder is not None:
            Path(folder).mkdir(parents=True, exist_ok=True)
            for tag, figure in figures:
                figure.savefig(Path(folder) / f"epoch{trainer.current_epoch}_{tag.replace('/', '_')}.png", dpi=FIGURE_DPI)
