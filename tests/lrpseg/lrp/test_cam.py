"""Seg-Grad-CAM and Seg-HiRes-Grad-CAM (seed 004) against a hook-based reference on the original model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lrpseg import lrp
from lrpseg.lrp.cam import default_layer
from tests.lrpseg.lrp.conftest import tiny_unet, tiny_vgg


def _reference(model, x, mask, layer, variant):
    store = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: store.update(a=o))
    try:
        logits = model(x)
    finally:
        handle.remove()
    a = store["a"]
    (g,) = torch.autograd.grad((logits * mask).sum(), a)
    if variant == "grad":
        cam = (g.mean(dim=(2, 3), keepdim=True) * a).sum(1)
    else:
        cam = (g * a).sum(1)
    return F.interpolate(cam[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0].detach()


@pytest.mark.parametrize("variant", ["grad", "hires"])
def test_seg_cam_matches_reference(variant: str) -> None:
    model = tiny_unet("transpose", batch_norm=False)  # BN folding changes nothing without BN
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        logits = model(x)
    mask = torch.zeros_like(logits)
    mask[:, 1] = logits.argmax(1) == 1
    layer = default_layer(model, x)
    ours = lrp.seg_grad_cam(model, x, mask, variant=variant, relu=False)
    ref = _reference(model, x, mask, layer, variant)
    assert torch.allclose(ours, ref, rtol=1e-10, atol=1e-12)
    clamped = lrp.seg_grad_cam(model, x, mask, variant=variant)
    assert torch.equal(clamped, ref.clamp(min=0))


def test_seg_cam_errors() -> None:
    model = tiny_unet()
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="no module named"):
        lrp.seg_grad_cam(model, x, torch.ones(1, 2, 8, 8, dtype=torch.float64), layer="nope")
    with pytest.raises(ValueError, match="mask has shape"):
        lrp.seg_grad_cam(model, x, torch.ones(1, 3, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="variant"):
        lrp.seg_grad_cam(model, x, torch.ones(1, 2, 8, 8, dtype=torch.float64), variant="x")


def test_default_layer_is_what_the_head_reads() -> None:
    """U-Net: the last full-resolution decoder feature map, i.e. the head's input."""
    model = tiny_unet("transpose")
    x = torch.randn(1, 1, 16, 16, dtype=torch.float64)
    layer = default_layer(model, x)
    store: dict[str, Tensor] = {}
    model.head.register_forward_hook(lambda m, i, o: store.update(head_input=i[0]))
    model.get_submodule(layer).register_forward_hook(lambda m, i, o: store.update(chosen=o))
    model(x)
    assert layer.startswith("decoders.")
    assert store["chosen"].shape[2:] == x.shape[2:]
    assert torch.equal(store["chosen"], store["head_input"])


class Misnamed(nn.Module):
    """Module names lie about the data flow: 'decoder' runs first, 'encoder' last, 'bottleneck' is full size."""

    def __init__(self) -> None:
        super().__init__()
        self.decoder = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Conv2d(4, 4, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2)
        self.encoder = nn.Conv2d(8, 4, 3, padding=1)
        self.act1, self.act2, self.act3 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.bottleneck = nn.Conv2d(4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.act1(self.decoder(x))
        b = self.up(self.act2(self.head(self.pool(a))))
        return self.bottleneck(self.act3(self.encoder(torch.cat([a, b], 1))))


def test_default_layer_follows_data_flow_not_names() -> None:
    model = Misnamed().double().eval()
    x = torch.randn(1, 1, 12, 12, dtype=torch.float64)
    assert default_layer(model, x) == "act3"  # the last full-size map before the logits
    mask = torch.zeros(1, 2, 12, 12, dtype=torch.float64)
    mask[:, 1, 3:7, 4:9] = 1
    cam = lrp.seg_grad_cam(model, x, mask, variant="hires", relu=False)
    assert torch.allclose(cam, _reference(model, x, mask, "act3", "hires"), rtol=1e-10, atol=1e-12)


def test_default_layer_of_a_classifier_is_the_deepest_map() -> None:
    model = tiny_vgg()
    x = torch.randn(1, 1, 32, 32, dtype=torch.float64)
    layer = default_layer(model, x)
    store: dict[str, Tensor] = {}
    model.get_submodule(layer).register_forward_hook(lambda m, i, o: store.update(a=o))
    model(x)
    assert store["a"].shape[-1] == min(o.shape[-1] for o in _spatial_outputs(model, x))


def _spatial_outputs(model: nn.Module, x: Tensor) -> list[Tensor]:
    outs: list[Tensor] = []
    hooks = [m.register_forward_hook(lambda m, i, o: outs.append(o)) for m in model.modules() if not list(m.children())]
    model(x)
    for h in hooks:
        h.remove()
    return [o for o in outs if o.dim() == 4]
