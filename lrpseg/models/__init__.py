"""Model families: our U-Net segmenters and VGG-11 classifiers, and whitelisted networks of
MONAI, segmentation_models_pytorch and torchvision (lrpseg.models.families)."""

from __future__ import annotations

from typing import Any

from torch import nn

from lrpseg.models.families import FAMILIES, build_library_model
from lrpseg.models.unet import UNet, UNetConfig
from lrpseg.models.vgg import VGG11, VGGConfig

__all__ = ["VGG11", "UNet", "UNetConfig", "VGGConfig", "build_model"]


def build_model(config: dict[str, Any]) -> nn.Module:
    """Build a model from a JSON-style config with a "family" key."""
    params = dict(config)
    family = params.pop("family", None)
    if family == "unet":
        return UNet(UNetConfig(**params))
    if family == "vgg11":
        return VGG11(VGGConfig(**params))
    if family in FAMILIES:
        return build_library_model(family, params)
    raise ValueError(f"unknown model family {family!r}; expected 'unet', 'vgg11' or one of {sorted(FAMILIES)}")
