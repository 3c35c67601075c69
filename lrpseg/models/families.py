"""Segmentation networks from MONAI, segmentation_models_pytorch and torchvision, built
from a config.json "architecture" without user code.

    {"family": "monai", "class": "UNet", "spatial_dims": 3, "in_channels": 1,
     "out_channels": 2, "channels": [16, 32, 64], "strides": [2, 2], "num_res_units": 2}

Only the classes listed here can be named (no arbitrary imports); the other keys
are the class's own keyword arguments. Weights always come from the model
directory's safetensors file: anything that would download weights
(`pretrained`, `encoder_weights`, `weights`, `weights_backbone`) is refused unless
null/false, and set so when absent. The libraries are optional
(`pip install 'lrpseg[models]'`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from torch import Tensor, nn


class FamilyError(ValueError):
    """A library family that cannot be built: unknown class, missing library, bad arguments."""


@dataclass(frozen=True)
class LibraryFamily:
    package: str  # what to pip install
    module: str  # where the whitelisted classes live
    classes: tuple[str, ...]
    in_channels: str | None  # keyword of the input channels (None: fixed at 3)
    num_classes: str  # keyword of the output classes
    no_download: dict[str, Any] = field(default_factory=dict)  # keyword -> the only value accepted


FAMILIES: dict[str, LibraryFamily] = {
    "monai": LibraryFamily(
        package="monai",
        module="monai.networks.nets",
        classes=("UNet", "BasicUNet", "SegResNet", "AttentionUnet", "FlexibleUNet"),
        in_channels="in_channels",
        num_classes="out_channels",
        no_download={"pretrained": False},
    ),
    "segmentation_models_pytorch": LibraryFamily(
        package="segmentation-models-pytorch",
        module="segmentation_models_pytorch",
        classes=("Unet", "UnetPlusPlus", "FPN", "DeepLabV3Plus", "Linknet"),
        in_channels="in_channels",
        num_classes="classes",
        no_download={"encoder_weights": None},
    ),
    "torchvision.models.segmentation": LibraryFamily(
        package="torchvision",
        module="torchvision.models.segmentation",
        classes=(
            "fcn_resnet50",
            "fcn_resnet101",
            "deeplabv3_resnet50",
            "deeplabv3_resnet101",
            "deeplabv3_mobilenet_v3_large",
            "lraspp_mobilenet_v3_large",
        ),
        in_channels=None,
        num_classes="num_classes",
        no_download={"weights": None, "weights_backbone": None},
    ),
}
# Arguments that only apply to some classes of a family (set only where the class takes them).
OPTIONAL_NO_DOWNLOAD = {("monai", "pretrained"): ("FlexibleUNet",)}


def _spec(family: str, params: dict[str, Any]) -> tuple[LibraryFamily, str, dict[str, Any]]:
    spec = FAMILIES[family]
    kwargs = dict(params)
    cls = kwargs.pop("class", None)
    if cls not in spec.classes:
        raise FamilyError(f'"class" must be one of {list(spec.classes)} for family {family!r}, got {cls!r}')
    for key, allowed in spec.no_download.items():
        applies = OPTIONAL_NO_DOWNLOAD.get((family, key))
        if applies is not None and cls not in applies:
            continue
        if kwargs.get(key, allowed) != allowed:
            raise FamilyError(
                f"{key}={kwargs[key]!r} would download weights; weights come from the model directory's "
                f"safetensors file only ({key} must be {allowed!r} or absent)"
            )
        kwargs[key] = allowed
    return spec, str(cls), kwargs


def channels(family: str, params: dict[str, Any]) -> tuple[int, int, int]:
    """(in_channels, num_classes, spatial_dims) declared by a library family's architecture."""
    spec, _, kwargs = _spec(family, params)
    try:
        in_ch = 3 if spec.in_channels is None else int(kwargs[spec.in_channels])
        out_ch = int(kwargs[spec.num_classes])
        dims = int(kwargs.get("spatial_dims", 2))
    except (KeyError, TypeError, ValueError):
        need = [k for k in (spec.in_channels, spec.num_classes) if k]
        raise FamilyError(f"family {family!r} declares integer {need} in the architecture") from None
    if in_ch < 1 or out_ch < 1 or dims not in (2, 3):
        raise FamilyError("channels and classes must be positive, spatial_dims 2 or 3")
    return in_ch, out_ch, dims


def _library(family: str) -> ModuleType:
    """The module of the family's whitelisted classes, imported by name (no importlib: the import
    graph test sees every arrow)."""
    if family == "monai":
        import monai.networks.nets as nets

        return nets
    if family == "segmentation_models_pytorch":
        import segmentation_models_pytorch as smp

        return smp
    import torchvision.models.segmentation as segmentation

    return segmentation


def build_library_model(family: str, params: dict[str, Any]) -> nn.Module:
    """The network of a whitelisted class of `family`, randomly initialised."""
    spec, cls, kwargs = _spec(family, params)
    try:
        module = _library(family)
    except ImportError as exc:
        raise FamilyError(
            f"family {family!r} needs the {spec.package} package: pip install 'lrpseg[models]' ({exc})"
        ) from None
    try:
        return getattr(module, cls)(**kwargs)
    except (TypeError, ValueError, AssertionError, KeyError) as exc:
        raise FamilyError(f"cannot build {family} {cls}: {type(exc).__name__}: {exc}") from None


class Logits(nn.Module):
    """A library network that returns the logits tensor: torchvision's {"out": ...} and
    smp's (masks, labels) give their first output, so every caller gets (N, K, ...)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        if isinstance(out, dict):
            return out["out"]
        if isinstance(out, (tuple, list)):
            return out[0]
        return out
