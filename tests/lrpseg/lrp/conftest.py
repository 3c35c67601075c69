"""Small float64 networks covering every op the engine supports."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lrpseg.models import VGG11, UNet, UNetConfig, VGGConfig


def randomize_batchnorm(model: nn.Module) -> nn.Module:
    """Give BatchNorm layers non-trivial statistics so folding matters."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen) * 0.4 - 0.2)
    return model


class ResidualUNet(nn.Module):
    """A two-level U-Net with additive skips and residual blocks, written the
    way users write it (`a + b`). With `sum_module=True` the additions go through
    zennit's Sum module instead, so zennit can give them the Norm rule."""

    def __init__(self, sum_module: bool = False) -> None:
        super().__init__()
        self.sum_module = sum_module
        self.stem = nn.Conv2d(1, 6, 3, padding=1)
        self.res1 = nn.Conv2d(6, 6, 3, padding=1)
        self.down = nn.Conv2d(6, 12, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(12, 12, 3, padding=1)
        self.up = nn.ConvTranspose2d(12, 6, 2, stride=2)
        self.dec = nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Conv2d(6, 3, 1)
        self.act = nn.ReLU()
        if sum_module:
            from zennit.layer import Sum

            self.add1, self.add2 = Sum(), Sum()

    def _add(self, name: str, a: Tensor, b: Tensor) -> Tensor:
        if self.sum_module:
            return getattr(self, name)(torch.stack([a, b], dim=-1))
        return a + b

    def forward(self, x: Tensor) -> Tensor:
        s = self.act(self.stem(x))
        s = self.act(self._add("add1", s, self.res1(s)))
        m = self.act(self.mid(self.act(self.down(s))))
        u = self.act(self.up(m))
        d = self.act(self.dec(self._add("add2", u, s)))
        return self.head(d)


class LeakyNet(nn.Module):
    """LeakyReLU gives layers negative inputs: exercises the x- branches of the rules."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 5, 3, padding=1)
        self.a1 = nn.LeakyReLU(0.1)
        self.c2 = nn.Conv2d(5, 7, 3, padding=1)
        self.a2 = nn.LeakyReLU(0.1)
        self.pool = nn.AvgPool2d(2)
        self.c3 = nn.Conv2d(7, 4, 3, padding=1)
        self.a3 = nn.LeakyReLU(0.1)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.a2(self.c2(self.a1(self.c1(x)))))
        return self.fc(torch.flatten(self.a3(self.c3(x)), 1))


def tiny_unet(upsampling: str = "transpose", batch_norm: bool = True) -> nn.Module:
    cfg = UNetConfig(in_channels=1, num_classes=2, depth=2, base_width=4, batch_norm=batch_norm, upsampling=upsampling)
    return randomize_batchnorm(UNet(cfg)).double().eval()


def tiny_vgg(head: str = "128n") -> nn.Module:
    return VGG11(VGGConfig(in_channels=1, base_width=2, input_size=32, head=head, hidden=16)).double().eval()
