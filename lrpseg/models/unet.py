"""Ronneberger U-Net with configurable depth, width, BatchNorm and upsampling, 2-D or 3-D."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 1
    num_classes: int = 2
    depth: int = 4
    base_width: int = 16
    batch_norm: bool = True
    upsampling: Literal["transpose", "bilinear"] = "transpose"  # "bilinear" is trilinear in 3-D
    spatial_dims: Literal[2, 3] = 2  # 3: Conv3d etc., input (N, C, D, H, W)

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3) or isinstance(self.spatial_dims, bool):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims!r}")
        if self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")
        if self.num_classes < 1 or self.depth < 1 or self.base_width < 1:
            raise ValueError("num_classes, depth and base_width must be positive")
        if self.upsampling not in ("transpose", "bilinear"):
            raise ValueError(f"upsampling must be 'transpose' or 'bilinear', got {self.upsampling!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"family": "unet", **asdict(self)}


CONV = {2: nn.Conv2d, 3: nn.Conv3d}
CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
NORM = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
LINEAR_UP = {2: "bilinear", 3: "trilinear"}


def double_conv(cin: int, cout: int, batch_norm: bool, dims: int = 2) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c in (cin, cout):
        layers.append(CONV[dims](c, cout, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(NORM[dims](cout))
        layers.append(nn.ReLU(inplace=False))
    return nn.Sequential(*layers)


def up_block(cin: int, cout: int, mode: str, dims: int = 2) -> nn.Module:
    if mode == "transpose":
        return CONV_T[dims](cin, cout, kernel_size=2, stride=2)
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode=LINEAR_UP[dims], align_corners=False),
        CONV[dims](cin, cout, kernel_size=1),
    )


class UNet(nn.Module):
    """U-Net returning per-pixel logits (N, K, H, W) for any input size; with
    spatial_dims=3 per-voxel logits (N, K, D, H, W).

    Inputs whose sides are not multiples of 2**depth are zero-padded on the
    bottom/right (and back, in 3-D) and the logits cropped back, inside the traced
    graph, so LRP sees the same computation as inference.
    """

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or UNetConfig()
        widths = [config.base_width * 2**i for i in range(config.depth + 1)]
        dims = config.spatial_dims
        cin = config.in_channels
        self.encoders = nn.ModuleList()
        for w in widths[:-1]:
            self.encoders.append(double_conv(cin, w, config.batch_norm, dims))
            cin = w
        self.pool = POOL[dims](2)
        self.bottleneck = double_conv(widths[-2], widths[-1], config.batch_norm, dims)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for w_low, w in zip(widths[:0:-1], widths[-2::-1]):
            self.ups.append(up_block(w_low, w, config.upsampling, dims))
            self.decoders.append(double_conv(2 * w, w, config.batch_norm, dims))
        self.head = CONV[dims](widths[0], config.num_classes, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        if self.config.spatial_dims == 3:
            return self.forward_3d(x)
        h, w = x.shape[-2], x.shape[-1]
        m = 2**self.config.depth
        x = F.pad(x, (0, (m - w % m) % m, 0, (m - h % m) % m))
        return self.body(x)[:, :, :h, :w]

    def forward_3d(self, x: Tensor) -> Tensor:
        d, h, w = x.shape[-3], x.shape[-2], x.shape[-1]
        m = 2**self.config.depth
        x = F.pad(x, (0, (m - w % m) % m, 0, (m - h % m) % m, 0, (m - d % m) % m))
        return self.body(x)[:, :, :d, :h, :w]

    def body(self, x: Tensor) -> Tensor:
        """Encoder, bottleneck, decoder and head on an input padded to multiples of 2**depth."""
        skips: list[Tensor] = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, dec, skip in zip(self.ups, self.decoders, reversed(skips)):
            x = dec(torch.cat([skip, up(x)], dim=1))
        return self.head(x)
