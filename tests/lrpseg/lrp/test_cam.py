"""Seg-Grad-CAM and Seg-HiRes-Grad-CAM (seed 004) against a hook-based reference on the original model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lrpseg import lrp
from lrpseg.lrp.cam import default_layer
from tests.lrpseg.lrp.conftest import tiny_unet


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
    assert layer.startswith("bottleneck")
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
