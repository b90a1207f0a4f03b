"""Task routes: how one task runs the shared backbone, as a part of the model rather than a module subclass.

A route turns a task's batch into the features its head reads. The default, `EncoderRoute`, is
``backbone(*adapter(batch))``; a task whose inputs do not fit that (VQA fuses a question with an
image) brings its own route with its own layers. Routes live beside adapters and heads in
`AttnLabModule`, so tasks with different routes share one backbone in one multi-task run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from torch import Tensor, nn


class TaskRoute(nn.Module, ABC):
    """batch -> (features (B, ..., F), mask | None) for the task's head, through the shared backbone.

    Attributes a route sets:
        out_dim: the feature width F its head is built with (``head(dim=out_dim)``).
        uses_backbone: False when the route never calls the backbone (e.g. a no-attention baseline);
            a module none of whose routes uses the backbone does not hold it, so no parameter sits
            unused (DDP requires every trainable parameter to receive a gradient).
        head_kwargs: more constructor arguments for the head, when one width is not enough (a feature
            pyramid hands its per-level channels): ``head(dim=out_dim, **head_kwargs)``.
        aux_loss: set by ``forward`` when the route has an objective of its own (the sentence-memory
            route's supervised hops), else None; the module adds it to the task's loss and logs it as
            ``{stage}/{task}/route_loss``.

    A route whose constructor takes ``backbone=`` gets the built backbone (to size its layers from, e.g.,
    a timm model's ``feature_info``); it must not keep it as a submodule (the module holds it).
    """

    out_dim: int
    uses_backbone: bool = True
    head_kwargs: dict[str, Any] = {}  # noqa: RUF012  (read-only default; routes assign their own dict)
    aux_loss: Tensor | None = None

    @abstractmethod
    def forward(self, backbone: nn.Module, adapter: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, Tensor | None]:
        """Run `adapter` and `backbone` on `batch`; returns the head's input and its mask."""


class EncoderRoute(TaskRoute):
    """The default route: ``tokens, mask = adapter(batch)``; ``hidden = backbone(tokens, mask)``.

    Backbones with ``takes_pixels = True`` (timm) embed images themselves and get the adapter's raw
    ``pixels(batch)`` instead (the module builds such adapters with ``pixels_only=True``).

    Args:
        dim: the backbone width D (the head's input width).
    """

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.out_dim = dim

    def forward(self, backbone: nn.Module, adapter: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, Tensor | None]:
        if getattr(backbone, "takes_pixels", False):
            images, _ = adapter.pixels(batch)
            return backbone(images), None  # (B, N, D): the backbone makes its own token grid
        tokens, mask = adapter(batch)  # (B, N, D), (B, N) | None
        return backbone(tokens, mask), mask
