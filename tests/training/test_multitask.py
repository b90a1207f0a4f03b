"""Two tasks with different routes share one backbone: vqa (its own route) + image_classification (default)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities import CombinedLoader
from tests.conftest import TINY_TASK, compose_config

from attnlab.backbones import TransformerEncoder
from attnlab.training import AttnLabModule, EncoderRoute


def _task(name: str, tmp_path: Path, data_dir: Path):
    cfg = compose_config("train", [*TINY_TASK[name], "backbone=compact"], tmp_path / name, data_dir)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    return instantiate(cfg.model.tasks[name]), datamodule, cfg


def test_vqa_and_image_classification_train_together_on_one_backbone(tmp_path, data_dir):
    tasks, loaders = {}, {}
    for name in ("vqa", "image_classification"):
        spec, datamodule, cfg = _task(name, tmp_path, data_dir)
        tasks[name], loaders[name] = spec, datamodule.train_dataloader()
    torch.manual_seed(0)
    backbone = TransformerEncoder(dim=cfg.backbone.dim, depth=2, num_heads=4, layer_scale_init=0.01)
    model = AttnLabModule(backbone=backbone, tasks=tasks, optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3))
    assert isinstance(model.routes["image_classification"], EncoderRoute)
    assert type(model.routes["vqa"]).__name__ == "VQARoute"
    before = {name: p.detach().clone() for name, p in model.named_parameters()}

    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, train_dataloaders=CombinedLoader(loaders, mode="max_size_cycle"))
    assert trainer.global_step == 3
    metrics = trainer.callback_metrics
    assert {"train/vqa/loss", "train/image_classification/loss", "train/loss"} <= set(metrics)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    for part in ("backbone.", "routes.vqa.", "adapters.vqa.", "heads.vqa.", "adapters.image_classification.",
                 "heads.image_classification."):
        assert any(name.startswith(part) for name in changed), f"no parameter of {part} was trained"
