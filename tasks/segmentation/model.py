"""Attention U-Net on the shared backbone: a multi-scale feature pyramid (the route) and a U-Net decoder
whose skip connections pass through additive attention gates (the head; Oktay et al. 2018).

    image ──stem convs──────────────────────────── level 0 (stride 1) ──gate──┐
    tokens ─backbone─┬ block a ─ up x2 ─────────── level 1 (stride p/2) ─gate─┤ decoder: upsample, gate the
                     ├ block b ─ 1x1 ──────────── level 2 (stride p) ──gate─┤ skip with the coarser level,
                     └ final ── down x2 ────────── level 3 (stride 2p) ─────┘ concatenate, convolve
    (UNETR-style for the transformer; a timm CNN gives its own stages instead of the token levels)
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassF1Score, MulticlassJaccardIndex

from attnlab.attention import AttentionGate
from attnlab.backbones import tokens_to_grid
from attnlab.training import TaskHead
from attnlab.training.head import FILES_KEY
from attnlab.training.route import TaskRoute


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 convolutions, each with BatchNorm and ReLU: the U-Net unit."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _projection(layer: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(layer, nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


def level_widths(num_levels: int, *, width: int, max_width: int) -> list[int]:
    """Channels per pyramid level, fine to coarse: width * 2**level, capped at max_width."""
    return [min(width * 2**level, max_width) for level in range(num_levels)]


class PyramidRoute(TaskRoute):
    """batch -> [level 0 (B, C0, H, W), ..., level L (B, CL, H / s_L, W / s_L)], fine to coarse.

    Level 0 is a full-resolution convolutional stem on the pixels (fine boundaries; UNETR's z0 path).
    Token backbones (the shared transformer): blocks ``block_indices = (a, b)`` and the final hidden
    state, reshaped to the adapter's patch grid (stride p), become levels at strides p/2 (transposed
    convolution), p (1x1 convolution) and 2p (strided convolution). Pixel backbones (timm):
    ``forward_intermediates`` maps of ``timm_indices`` (None: every stage), each projected by a 1x1
    convolution. Level widths: ``width * 2**level``, capped at ``max_width``.

    Args:
        dim: backbone width D.
        backbone: the built backbone (read for its kind and feature_info; not kept).
        in_chans: image channels (the stem's input).
        width / max_width: level widths.
        block_indices: the two transformer blocks feeding levels 1 and 2.
        timm_indices: timm feature levels (None: all); the last must be the final stage, so no
            backbone parameter is left without a gradient.
    """

    def __init__(
        self,
        *,
        dim: int,
        backbone: nn.Module,
        in_chans: int = 1,
        width: int = 16,
        max_width: int = 128,
        block_indices: Sequence[int] = (1, 2),
        timm_indices: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.pixel_backbone = bool(getattr(backbone, "takes_pixels", False))
        if self.pixel_backbone:
            info = backbone.feature_info_for(None if timm_indices is None else list(timm_indices))
            levels = len(info) + 1
            if info[-1]["index"] != len(backbone.feature_info) - 1:
                raise ValueError(
                    f"model.tasks.segmentation.route.timm_indices={list(timm_indices or [])} stops before the last "
                    f"stage of {backbone.model_name}: its later stages would train without gradients; end the "
                    "list with -1"
                )
            self.timm_indices = [level["index"] for level in info]
        else:
            if not hasattr(backbone, "forward_intermediates") or len(block_indices) != 2:
                raise ValueError(
                    "the segmentation pyramid needs a backbone with forward_intermediates (backbone=tiny|small|base "
                    f"or timm) and two route.block_indices, got {type(backbone).__name__} and {list(block_indices)}"
                )
            info, levels = [], 4
            self.block_indices = [int(i) for i in block_indices]
        self.channels = level_widths(levels, width=width, max_width=max_width)  # C0..CL
        self.stem = conv_block(in_chans, self.channels[0])
        if self.pixel_backbone:
            self.projections = nn.ModuleList(
                _projection(nn.Conv2d(level["num_chs"], c, kernel_size=1, bias=False), c)
                for level, c in zip(info, self.channels[1:], strict=True)
            )
        else:
            c1, c2, c3 = self.channels[1:]
            self.projections = nn.ModuleList([
                _projection(nn.ConvTranspose2d(dim, c1, kernel_size=2, stride=2, bias=False), c1),  # stride p/2
                _projection(nn.Conv2d(dim, c2, kernel_size=1, bias=False), c2),  # stride p
                _projection(nn.Conv2d(dim, c3, kernel_size=2, stride=2, bias=False), c3),  # stride 2p
            ])
        self.out_dim = self.channels[-1]
        self.head_kwargs = {"level_channels": list(self.channels)}

    def forward(self, backbone: nn.Module, adapter: nn.Module, batch: dict[str, Any]) -> tuple[list[Tensor], None]:
        images, _ = adapter.pixels(batch)  # (B, C, H, W)
        levels = [self.stem(images)]  # (B, C0, H, W)
        if self.pixel_backbone:
            _, maps = backbone.forward_intermediates(images, indices=self.timm_indices)  # [(B, C_i, H_i, W_i)]
        else:
            tokens, mask = adapter(batch)  # (B, N, D)
            final, states = backbone.forward_intermediates(tokens, mask, indices=self.block_indices, norm=True)
            maps = [tokens_to_grid(t, adapter.grid_size) for t in (*states, final)]  # 3 x (B, D, gh, gw)
        levels += [project(m) for project, m in zip(self.projections, maps, strict=True)]
        return levels, None


class ClassDice(MulticlassF1Score):
    """Dice (= F1 over pixels) of one class, so that each class logs as its own scalar."""

    def __init__(self, class_index: int, *, num_classes: int, ignore_index: int) -> None:
        super().__init__(num_classes, ignore_index=ignore_index, average="none")
        self.class_index = class_index

    def compute(self) -> Tensor:
        return super().compute()[self.class_index]


class SmallObjectJaccard(MulticlassJaccardIndex):
    """mIoU on the pixels of small objects and a `margin`-pixel ring around them (false positives near
    them count); every other pixel is ignored."""

    def __init__(self, *, num_classes: int, ignore_index: int, margin: int) -> None:
        super().__init__(num_classes, ignore_index=ignore_index, average="macro")
        self.margin = margin

    def update(self, preds: Tensor, target: Tensor, small: Tensor) -> None:
        super().update(preds, small_object_target(target, small, margin=self.margin, ignore_index=self.ignore_index))


def small_object_target(target: Tensor, small: Tensor, *, margin: int, ignore_index: int) -> Tensor:
    """(B, H, W) target kept within `margin` pixels of a small object (`small`, bool), ignore elsewhere."""
    kernel = 2 * margin + 1
    near = F.max_pool2d(small[:, None].float(), kernel, stride=1, padding=margin)[:, 0] > 0  # (B, H, W)
    return torch.where(near, target, torch.full_like(target, ignore_index))


class AttentionUNetHead(TaskHead):
    """U-Net decoder over a feature pyramid, attention gates on the skips, per-pixel classes; CE + Dice.

    From the coarsest level up: upsample the decoder state d to the next finer level, gate that level's
    skip x with alpha = sigmoid(psi^T ReLU(W_x x + W_g d)) (``gates=True``; the plain U-Net otherwise),
    concatenate, two 3x3 convolutions. A 1x1 convolution gives (B, classes, H, W) logits.

    Args:
        dim: width of the coarsest level (the route's out_dim).
        level_channels: widths of every level, fine to coarse (the route's head_kwargs).
        num_classes: classes including background.
        gates: attention gates on the skip connections.
        ignore_index: target value excluded from the loss and the metrics.
        dice_weight: weight of the soft Dice loss added to cross-entropy.
        class_names: names for the per-class Dice metrics (``dice_<name>``); default the class ids.
        small_margin: pixels around small objects that count in ``miou_small`` (false positives near them).
    """

    def __init__(
        self,
        *,
        dim: int,
        level_channels: Sequence[int],
        num_classes: int,
        gates: bool = True,
        ignore_index: int = 255,
        dice_weight: float = 1.0,
        class_names: Sequence[str] | None = None,
        small_margin: int = 2,
    ) -> None:
        super().__init__()
        channels = [int(c) for c in level_channels]
        if len(channels) < 2 or channels[-1] != dim:
            raise ValueError(f"level_channels={channels} must list >= 2 levels ending with the route width {dim}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class_names for num_classes={num_classes}")
        self.num_classes, self.ignore_index, self.dice_weight = num_classes, ignore_index, dice_weight
        self.class_names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(num_classes)]
        self.small_margin = small_margin
        fine = range(len(channels) - 2, -1, -1)  # decoder steps: into level L-1, ..., 0
        self.gates = nn.ModuleList(
            AttentionGate(x_channels=channels[i], g_channels=channels[i + 1], inter_channels=max(1, channels[i] // 2))
            for i in fine
        ) if gates else None
        self.blocks = nn.ModuleList(conv_block(channels[i + 1] + channels[i], channels[i]) for i in fine)
        self.classifier = nn.Conv2d(channels[0], num_classes, kernel_size=1)

    def forward(self, hidden: list[Tensor], mask: Tensor | None, batch: dict[str, Any]) -> dict[str, Tensor]:
        levels = hidden  # fine to coarse
        decoded = levels[-1]  # (B, CL, h, w)
        outputs: dict[str, Tensor] = {}
        for step, skip in enumerate(reversed(levels[:-1])):
            level = len(levels) - 2 - step
            if self.gates is not None:
                skip, alpha = self.gates[step](skip, decoded)  # alpha (B, 1, H_l, W_l)
                outputs[f"gate_{level}"] = alpha
            upsampled = F.interpolate(decoded, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            decoded = self.blocks[step](torch.cat([upsampled, skip], dim=1))  # (B, C_l, H_l, W_l)
        logits = self.classifier(decoded)  # (B, classes, H, W)
        size = batch["image"].shape[-2:]
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        outputs["logits"] = logits
        return outputs

    def loss(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> Tensor:
        logits, target = outputs["logits"].float(), batch["mask"]  # (B, C, H, W), (B, H, W)
        cross_entropy = F.cross_entropy(logits, target, ignore_index=self.ignore_index)
        if self.dice_weight == 0:
            return cross_entropy
        return cross_entropy + self.dice_weight * soft_dice_loss(logits, target, ignore_index=self.ignore_index)

    def predict(self, outputs: dict[str, Tensor], batch: dict[str, Any]) -> list[dict[str, Any]]:
        labels = outputs["logits"].argmax(1).to(torch.uint8).cpu().numpy()  # (B, H, W)
        records = []
        for index, mask in zip(batch["index"].tolist(), labels, strict=True):
            ids, counts = np.unique(mask, return_counts=True)
            pixels = {self.class_names[i]: int(n) for i, n in zip(ids, counts, strict=True) if i != 0}
            records.append({
                "index": int(index),
                "prediction": ", ".join(sorted(pixels)) or "background",  # the classes found
                "pixels": pixels,  # predicted pixels per class (background left out)
                FILES_KEY: {"mask": (f"masks/{int(index):06d}.png", png_bytes(mask))},  # class ids, mode L
            })
        return records

    def build_metrics(self) -> MetricCollection:
        per_class = {
            f"dice_{name}": ClassDice(k, num_classes=self.num_classes, ignore_index=self.ignore_index)
            for k, name in enumerate(self.class_names)
        }
        return MetricCollection(
            {
                "miou": MulticlassJaccardIndex(self.num_classes, ignore_index=self.ignore_index, average="macro"),
                "miou_small": SmallObjectJaccard(
                    num_classes=self.num_classes, ignore_index=self.ignore_index, margin=self.small_margin
                ),
                "dice": MulticlassF1Score(self.num_classes, ignore_index=self.ignore_index, average="macro"),
                **per_class,
            },
            # the Dice metrics share one stat-score state, updated once per batch; miou and miou_small
            # stay apart (they see different targets, so they are never merged by equal states)
            compute_groups=[["dice", *per_class]],
        )

    def update_metrics(self, metrics: MetricCollection, outputs: dict[str, Tensor], batch: dict[str, Any]) -> None:
        # keyword arguments reach each metric filtered by its update signature: only miou_small takes `small`
        metrics.update(preds=outputs["logits"].argmax(1), target=batch["mask"], small=batch["small"])


def png_bytes(labels: np.ndarray) -> bytes:
    """(H, W) uint8 class ids -> a lossless greyscale PNG."""
    buffer = io.BytesIO()
    Image.fromarray(labels).save(buffer, format="PNG")
    return buffer.getvalue()


def soft_dice_loss(logits: Tensor, target: Tensor, *, ignore_index: int, smooth: float = 1.0) -> Tensor:
    """1 - mean over the classes present in the target of (2 |P n T| + s) / (|P| + |T| + s), on the pixels
    that are not ignored. P: softmax probabilities, T: one-hot targets, both summed over the batch.

    Absent classes are left out of the mean: their Dice would reach 1 only once their probability is
    driven to ~0 on every pixel (cross-entropy already does that), a floor that dominates small batches.
    """
    valid = target != ignore_index  # (B, H, W)
    probs = logits.softmax(1) * valid[:, None]  # (B, C, H, W)
    one_hot = F.one_hot(torch.where(valid, target, 0), logits.shape[1]).permute(0, 3, 1, 2) * valid[:, None]
    dims = (0, 2, 3)
    overlap, truth = (probs * one_hot).sum(dims), one_hot.sum(dims)  # (C,), (C,)
    dice = (2 * overlap + smooth) / (probs.sum(dims) + truth + smooth)
    present = truth > 0
    if not present.any():  # every pixel ignored
        return logits.sum() * 0.0
    return 1 - dice[present].mean()
