"""The U-Net family in 3-D: any volume size, the same op set as 2-D, explained exactly."""

from __future__ import annotations

import pytest
import torch

from lrpseg import lrp
from lrpseg.models import UNet, UNetConfig, build_model


@pytest.mark.parametrize("upsampling", ["transpose", "bilinear"])
def test_3d_unet_pads_and_crops_any_size(upsampling: str) -> None:
    torch.manual_seed(0)
    net = UNet(UNetConfig(num_classes=3, depth=2, base_width=2, upsampling=upsampling, spatial_dims=3)).eval()
    assert isinstance(net.head, torch.nn.Conv3d) and isinstance(net.pool, torch.nn.MaxPool3d)
    x = torch.randn(2, 1, 5, 9, 7)
    out = net(x)
    assert out.shape == (2, 3, 5, 9, 7)
    # the padding is zeros on the far side: the kept voxels equal a run on the padded input
    padded = torch.nn.functional.pad(x, (0, 1, 0, 3, 0, 3))
    assert torch.allclose(net(padded)[:, :, :5, :9, :7], out, atol=1e-6)


def test_config_round_trip_and_checks() -> None:
    config = UNetConfig(depth=1, base_width=2, spatial_dims=3)
    assert config.to_dict()["spatial_dims"] == 3
    assert build_model(config.to_dict()).config == config
    assert UNetConfig().spatial_dims == 2
    with pytest.raises(ValueError, match="spatial_dims"):
        UNetConfig(spatial_dims=4)  # type: ignore[arg-type]


def test_3d_unet_lrp0_equals_gradient_times_input() -> None:
    """LRP-0 with exact (vanishing-stabiliser) sums through Conv3d, BN3d (folded), MaxPool3d,
    ConvTranspose3d, cat and the pad/crop: Gradient x Input in float64."""
    torch.manual_seed(1)
    model = UNet(UNetConfig(depth=2, base_width=3, spatial_dims=3)).double().eval()
    x = torch.randn(1, 1, 6, 10, 9, dtype=torch.float64)
    prepared = lrp.prepare(model)
    logits = prepared.forward(x)[1]
    mask = (torch.rand_like(logits) > 0.5).to(logits)
    exact = {i.name: lrp.Norm(1e-300) for i in prepared.infos.values() if i.kind.value in ("norm", "add")}
    relevance = lrp.propagate(model, x, logits * mask, rules={"*": lrp.Zero(), **exact})
    xg = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(prepared.gm(xg), xg, mask)
    expected = grad * x
    assert relevance.shape == x.shape
    assert float((relevance - expected).abs().max() / expected.abs().max()) < 1e-10


@pytest.mark.parametrize("composite", ["ours", "montavon", "epsilon-gamma-box", "epsilon-plus-flat"])
def test_3d_unet_explained_with_every_composite(composite: str) -> None:
    torch.manual_seed(2)
    model = UNet(UNetConfig(depth=2, base_width=2, spatial_dims=3)).double().eval()
    x = torch.rand(1, 1, 4, 8, 8, dtype=torch.float64)
    found = lrp.explain(model, x, target="all", rules=composite, bounds=(0.0, 1.0))
    assert found.relevance.shape == x.shape and torch.isfinite(found.relevance).all()
