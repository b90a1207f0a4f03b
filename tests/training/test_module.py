"""AttnLabModule: one module for single- and multi-task runs."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from tasks.image_classification.head import AttentionPoolingClassifier

from attnlab.backbones import TransformerEncoder
from attnlab.embed import ImagePatchEmbed
from attnlab.training import AttnLabModule, TaskSpec


def _spec(num_classes: int) -> TaskSpec:
    return TaskSpec(
        adapter=partial(ImagePatchEmbed, image_size=8, patch_size=2, in_chans=1),
        head=partial(AttentionPoolingClassifier, num_classes=num_classes),
    )


def _batch(num_classes: int) -> dict:
    return {"image": torch.randn(4, 1, 8, 8), "label": torch.randint(0, num_classes, (4,)), "index": torch.arange(4)}


def _module(tasks: dict) -> AttnLabModule:
    torch.manual_seed(0)
    return AttnLabModule(
        backbone=TransformerEncoder(dim=32, depth=1, num_heads=2), tasks=tasks, optimizer=partial(torch.optim.AdamW)
    )


def test_multi_task_loss_is_the_weighted_sum_over_one_shared_backbone():
    tasks = {"digits": _spec(10), "parity": TaskSpec(adapter=_spec(2).adapter, head=_spec(2).head, loss_weight=0.5)}
    module = _module(tasks)
    batches = {"digits": _batch(10), "parity": _batch(2)}
    loss = module._shared_step(batches, "val")
    expected = sum(
        tasks[name].loss_weight * module.heads[name].loss(module(batch, name), batch) for name, batch in batches.items()
    )
    assert torch.allclose(loss, expected)
    assert set(module.metrics) == {f"{s}_{t}" for s in ("train", "val", "test") for t in tasks}
    with pytest.raises(ValueError, match="lacks tasks"):
        module._shared_step({"digits": batches["digits"]}, "val")


def test_empty_task_list_is_rejected():
    with pytest.raises(ValueError, match="model.tasks is empty"):
        _module({})


def test_a_head_without_metric_inputs_or_update_metrics_says_which_to_implement():
    from torchmetrics import MetricCollection

    from attnlab.training import TaskHead

    class Bare(TaskHead):
        def forward(self, hidden, mask, batch):
            return {}

        def loss(self, outputs, batch):
            return torch.zeros(())

        def predict(self, outputs, batch):
            return []

        def build_metrics(self):
            return MetricCollection({})

    with pytest.raises(TypeError, match="Bare implements neither metric_inputs nor update_metrics"):
        Bare().update_metrics(MetricCollection({}), {}, {})
