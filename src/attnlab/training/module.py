"""AttnLabModule: one LightningModule for single- and multi-task training of a shared backbone."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from attnlab.training.head import TaskHead
from attnlab.training.optim import build_optimizer
from attnlab.training.route import EncoderRoute, TaskRoute

STAGES = ("train", "val", "test")


@dataclass
class TaskSpec:
    """How one task plugs into the shared backbone: adapter -> route (through the backbone) -> head.

    All three are factories (Hydra ``_partial_``) completed by the module: the adapter and the route
    with ``dim=`` of the built backbone (and the route with ``backbone=`` when it takes it), the head
    with ``dim=`` of the route's output (``route.out_dim``, plus the route's ``head_kwargs``), so any backbone preset (or a timm model of unknown width) composes with any
    task. ``route=None`` is the default `EncoderRoute`, ``head(backbone(*adapter(batch)))``.
    """

    adapter: Callable[..., nn.Module]
    head: Callable[..., TaskHead]
    route: Callable[..., TaskRoute] | None = None
    loss_weight: float = 1.0


class AttnLabModule(L.LightningModule):
    """outputs = head(*route(backbone, adapter, batch), batch) per task; owns losses, metrics and optimisation.

    One generic class for every task: what differs between tasks lives in their `TaskSpec` parts
    (adapter, route, head), never in a subclass, so any tasks can share one backbone in one run.

    Args:
        backbone: shared encoder with ``.dim``; ``takes_pixels`` backbones get raw images. Not held
            when no task's route uses it (``route.uses_backbone``).
        tasks: task name -> TaskSpec. One entry is a single-task run; with several, each batch is
            a dict {task name: task batch} and the weighted losses are summed.
        optimizer: partial optimizer, called with parameter groups.
        scheduler: partial LR schedule, called with (optimizer, total_steps=); stepped per batch.
        weight_decay: applied to >= 2-D weights only.
        run_config: the resolved run configuration, stored in the checkpoint so `eval.py` can rebuild
            the model from ``ckpt_path`` alone.
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        tasks: Mapping[str, TaskSpec],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        weight_decay: float = 0.05,
        run_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("model.tasks is empty; a run needs at least one task")
        self.save_hyperparameters("run_config", "weight_decay")
        takes_pixels = bool(getattr(backbone, "takes_pixels", False))
        self.adapters = nn.ModuleDict(
            {name: _build_adapter(spec.adapter, dim=backbone.dim, takes_pixels=takes_pixels, task=name)
             for name, spec in tasks.items()}
        )
        self.routes = nn.ModuleDict(
            {name: _build_route(spec.route or EncoderRoute, backbone=backbone) for name, spec in tasks.items()}
        )
        self.heads = nn.ModuleDict(
            {name: spec.head(dim=self.routes[name].out_dim, **self.routes[name].head_kwargs) for name, spec in tasks.items()}
        )
        for name, head in self.heads.items():
            head.tie_to_adapter(self.adapters[name])
        self.loss_weights = {name: spec.loss_weight for name, spec in tasks.items()}
        # build only what is used: a backbone no route calls would be a block of unused parameters
        self.backbone = backbone if any(route.uses_backbone for route in self.routes.values()) else None
        # one metric collection per stage and task, logged as {stage}/{task}/{metric}
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_{name}": head.build_metrics().clone(prefix=f"{stage}/{name}/")
                for stage in STAGES
                for name, head in self.heads.items()
                if stage in head.metric_stages
            }
        )
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler

    def setup(self, stage: str) -> None:
        """Lets every head read what it needs from the datamodule (`TaskHead.bind_data`), and switches
        off in-model augmentation (modules with ``augments_in_training = True``, e.g. SpecAugment) under
        ``trainer.overfit_batches``, where one fixed batch must stay fixed (the datamodules stop theirs)."""
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        for head in self.heads.values():
            head.bind_data(datamodule)
        overfitting = bool(trainer is not None and trainer.overfit_batches)
        for module in self.modules():
            if getattr(module, "augments_in_training", False):
                module.active = not overfitting

    @property
    def task_names(self) -> list[str]:
        return list(self.heads.keys())

    def forward(self, batch: dict[str, Any], task: str) -> dict[str, Tensor]:
        features, mask = self.routes[task](self.backbone, self.adapters[task], batch)
        return self.heads[task](features, mask, batch)

    def _per_task(self, batch: Any) -> dict[str, dict[str, Any]]:
        if len(self.heads) == 1:
            return {self.task_names[0]: batch}
        missing = set(self.task_names) - set(batch)
        if missing:
            raise ValueError(f"multi-task batch lacks tasks {sorted(missing)}; the loader must yield {{task: batch}}")
        return batch

    def _shared_step(self, batch: Any, stage: str) -> Tensor:
        total = torch.zeros((), device=self.device)
        for task, task_batch in self._per_task(batch).items():
            head = self.heads[task]
            outputs = self(task_batch, task)
            loss = head.loss(outputs, task_batch)
            batch_size = _batch_size(task_batch)
            route_loss = getattr(self.routes[task], "aux_loss", None)  # a route's own objective (e.g. supervised hops)
            if route_loss is not None:
                self.log(f"{stage}/{task}/route_loss", route_loss, batch_size=batch_size, sync_dist=stage != "train")
                loss = loss + route_loss
            self.log(f"{stage}/{task}/loss", loss, batch_size=batch_size, prog_bar=stage != "train", sync_dist=stage != "train")
            if stage in head.metric_stages:
                metrics = self.metrics[f"{stage}_{task}"]
                head.update_metrics(metrics, {k: v.detach() for k, v in outputs.items()}, task_batch)
                self.log_dict(metrics, batch_size=batch_size, prog_bar=stage != "train", on_step=False, on_epoch=True)
            total = total + self.loss_weights[task] * loss
        if len(self.heads) > 1:
            self.log(f"{stage}/loss", total, batch_size=1, prog_bar=True)
        return total

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss = self._shared_step(batch, "train")
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss.item()} at step {self.global_step}; lower model.optimizer.lr, "
                "or use trainer.precision=32-true / trainer.gradient_clip_val"
            )
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> list[dict[str, Any]]:
        records = []
        for task, task_batch in self._per_task(batch).items():
            outputs = self(task_batch, task)
            records += [{"task": task, **record} for record in self.heads[task].predict(outputs, task_batch)]
        return records

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self, self.optimizer_factory, weight_decay=self.hparams.weight_decay)
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = self.scheduler_factory(optimizer, total_steps=total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _batch_size(batch: dict[str, Any]) -> int:
    for value in batch.values():
        if isinstance(value, Tensor) and value.dim() > 0:
            return int(value.shape[0])
    return 1


def _build_route(factory: Callable[..., TaskRoute], *, backbone: nn.Module) -> TaskRoute:
    """The task's route; one that asks for ``backbone=`` gets it (to size its layers from it)."""
    if "backbone" in inspect.signature(factory).parameters:
        return factory(dim=backbone.dim, backbone=backbone)
    return factory(dim=backbone.dim)


def _build_adapter(factory: Callable[..., nn.Module], *, dim: int, takes_pixels: bool, task: str) -> nn.Module:
    """The task's adapter for this backbone: pixel backbones get one that builds no embedding layers."""
    if not takes_pixels:
        return factory(dim=dim)
    if "pixels_only" not in inspect.signature(factory).parameters:
        name = getattr(factory, "func", factory).__name__
        raise ValueError(
            f"the backbone takes images, but task '{task}' uses the {name} adapter, which cannot hand it raw "
            "images; use a token backbone (backbone=tiny|compact|small|base)"
        )
    return factory(dim=dim, pixels_only=True)
