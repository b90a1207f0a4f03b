"""Any timm model as an attnlab backbone: images in, feature tokens (B, N, D) out.

Intermediate 2-D feature maps (segmentation pyramids) come from timm's own
``model.forward_intermediates`` (timm >= 1.0; ResNets, ConvNeXts, ViTs and most other families)
rather than ``features_only=True``: it runs on the same module and weights as ``forward`` (no second
model, no unused parameters under DDP), returns the final features in the same pass, and gives ViTs
their patch grid back as NCHW maps with the prefix (CLS) tokens dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.backbones.features import grid_to_tokens, take_indices


class TimmBackbone(nn.Module):
    """Wrap `timm.create_model(model_name)` without its classifier.

    Args:
        model_name: any name `timm.list_models()` knows.
        pretrained: load weights from the Hugging Face hub (needs network).
        pretrained_file: load weights from a local .pth/.bin/.safetensors file instead (offline machines).
        in_chans: input channels; timm adapts pretrained stem weights when this differs from 3.
        image_size: resize inputs to this side (or (H, W)) first (many models need more than tiny
            images); feature-map reductions are relative to this resized input.
        model_kwargs: extra `timm.create_model` arguments (e.g. ``img_size``, ``patch_size`` for ViTs).

    Intermediates: ``forward_intermediates(images, indices=...)`` returns (final tokens, list of
    (B, C_i, H_i, W_i) maps); ``feature_info`` lists ``num_chs`` (C_i) and ``reduction`` (input side /
    H_i) of every level the model advertises, ``feature_info_for(indices)`` those of a selection, so a
    decoder can size itself before seeing data. Levels are timm's: for a ResNet the stem and the four
    stages (reductions 2, 4, 8, 16, 32), for a ViT every block (reduction = patch size).
    """

    takes_pixels = True  # consumes raw images from the adapter's `pixels()`

    def __init__(
        self,
        *,
        model_name: str,
        pretrained: bool = False,
        pretrained_file: str | None = None,
        in_chans: int = 3,
        image_size: int | tuple[int, int] | None = None,
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
        self.model_name = model_name
        if image_size is None or isinstance(image_size, int):
            self.image_size = image_size if image_size is None else (int(image_size), int(image_size))
        else:
            self.image_size = tuple(int(n) for n in image_size)  # (H, W)

    def forward(self, images: Tensor, mask: Tensor | None = None) -> Tensor:
        features = self.model.forward_features(self._resize(images))
        if features.dim() == 4:  # CNN feature map (B, D, H', W') -> tokens (B, H'W', D)
            features = grid_to_tokens(features)
        return features  # (B, N, D)

    def forward_intermediates(
        self, images: Tensor, *, indices: int | Sequence[int] | None = None, norm: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        """Final tokens and 2-D feature maps of selected levels, in one pass.

        Args:
            images: (B, C, H, W), resized to ``image_size`` first like `forward`.
            indices: None -> every level in ``feature_info``; int n -> the last n levels; a sequence ->
                those levels in the order given (negative counts from the end).
            norm: apply the model's final norm to the maps where timm supports it (ViTs).

        Returns:
            (final tokens (B, N, D) == forward(images), list of (B, C_i, H_i, W_i) maps, one per index).
        """
        intermediates = getattr(self.model, "forward_intermediates", None)
        if intermediates is None:
            raise ValueError(
                f"backbone.model_name='{self.model_name}' has no forward_intermediates in timm {timm.__version__}; "
                "pick a model that has one (resnet*, convnext*, vit_*, ...) for feature maps"
            )
        taken = take_indices(len(self._levels()), indices, what="feature levels")
        unique = sorted(set(taken))
        final, maps = intermediates(self._resize(images), indices=unique, norm=norm, output_fmt="NCHW")
        by_index = dict(zip(unique, maps, strict=True))  # timm returns them in level order
        if final.dim() == 4:  # (B, D, H', W') -> (B, H'W', D), as in forward
            final = grid_to_tokens(final)
        return final, [by_index[i] for i in taken]

    @property
    def feature_info(self) -> list[dict[str, Any]]:
        """``{"index", "num_chs", "reduction", "module"}`` of every level `forward_intermediates` can return."""
        return self.feature_info_for(None)

    def feature_info_for(self, indices: int | Sequence[int] | None) -> list[dict[str, Any]]:
        """Channels and reduction of the maps ``forward_intermediates(indices=indices)`` returns, in order."""
        levels = self._levels()
        return [
            {
                "index": i,
                "num_chs": int(levels[i]["num_chs"]),
                "reduction": int(levels[i]["reduction"]),
                "module": levels[i].get("module", ""),
            }
            for i in take_indices(len(levels), indices, what="feature levels")
        ]

    def _levels(self) -> list[dict[str, Any]]:
        info = getattr(self.model, "feature_info", None)
        if not info:
            raise ValueError(
                f"backbone.model_name='{self.model_name}' advertises no feature_info in timm {timm.__version__}; "
                "pick a model that does (resnet*, convnext*, vit_*, ...) for feature maps"
            )
        return list(info)

    def _resize(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, *image_size), bilinear, when image_size is set and differs."""
        if self.image_size is not None and tuple(images.shape[-2:]) != self.image_size:
            images = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False)
        return images
