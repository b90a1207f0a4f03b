"""Any timm model as an attnlab backbone: images in, feature tokens (B, N, D) out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch.nn.functional as F
from torch import Tensor, nn


class TimmBackbone(nn.Module):
    """Wrap `timm.create_model(model_name)` without its classifier.

    Args:
        model_name: any name `timm.list_models()` knows.
        pretrained: load weights from the Hugging Face hub (needs network).
        pretrained_file: load weights from a local .pth/.bin/.safetensors file instead (offline machines).
        in_chans: input channels; timm adapts pretrained stem weights when this differs from 3.
        image_size: resize inputs to this side first (many models need more than tiny images).
        model_kwargs: extra `timm.create_model` arguments (e.g. ``img_size``, ``patch_size`` for ViTs).
    """

    takes_pixels = True  # consumes raw images from the adapter's `pixels()`

    def __init__(
        self,
        *,
        model_name: str,
        pretrained: bool = False,
        pretrained_file: str | None = None,
        in_chans: int = 3,
        image_size: int | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not timm.is_model(model_name):
            raise ValueError(f"backbone.model_name='{model_name}' is not a timm model; see timm.list_models()")
        kwargs: dict[str, Any] = dict(model_kwargs or {})
        if pretrained_file is not None:
            path = Path(pretrained_file)
            if not path.is_file():
                raise FileNotFoundError(f"backbone.pretrained_file={path} does not exist; give a local weights file")
            kwargs["pretrained_cfg_overlay"] = {"file": str(path.resolve())}
            pretrained = True
        self.model = timm.create_model(model_name, pretrained=pretrained, num_classes=0, in_chans=in_chans, **kwargs)
        self.dim = int(self.model.num_features)
        self.image_size = image_size

    def forward(self, images: Tensor, mask: Tensor | None = None) -> Tensor:
        if self.image_size is not None and images.shape[-1] != self.image_size:
            images = F.interpolate(images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        features = self.model.forward_features(images)
        if features.dim() == 4:  # CNN feature map (B, D, H', W') -> tokens (B, H'W', D)
            features = features.flatten(2).transpose(1, 2)
        return features  # (B, N, D)
