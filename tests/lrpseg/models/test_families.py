"""MONAI, segmentation_models_pytorch and torchvision networks: built from config, explained.

Every family, random-initialised and small: every composite gives finite relevance of
the input's shape; on the piecewise-linear ones (σ of Instance/GroupNorm held constant
in the reference, as the rule does) LRP-0 equals Gradient×Input in float64.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from lrpseg import lrp
from lrpseg.models import build_model
from lrpseg.models.families import FamilyError, Logits

pytest.importorskip("monai")
pytest.importorskip("segmentation_models_pytorch")

R18 = {"encoder_name": "resnet18", "encoder_depth": 3, "in_channels": 1, "classes": 2}
SMP = "segmentation_models_pytorch"
TV = "torchvision.models.segmentation"
# name -> (architecture, input shape, piecewise linear once σ is held constant)
ARCHS: dict[str, tuple[dict[str, Any], tuple[int, ...], bool]] = {
    "monai-unet": (
        {"family": "monai", "class": "UNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2,
         "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 2},
        (1, 1, 32, 32), True,
    ),
    "monai-unet-3d": (
        {"family": "monai", "class": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2,
         "channels": [4, 8], "strides": [2], "num_res_units": 1},
        (1, 1, 16, 16, 16), True,
    ),
    "monai-basicunet": (
        {"family": "monai", "class": "BasicUNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2,
         "features": [4, 4, 8, 8, 16, 4]},
        (1, 1, 32, 32), True,
    ),
    "monai-segresnet": (
        {"family": "monai", "class": "SegResNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2,
         "init_filters": 4, "blocks_down": [1, 1], "blocks_up": [1], "norm": ["GROUP", {"num_groups": 2}]},
        (1, 1, 32, 32), True,
    ),
    "monai-segresnet-3d": (
        {"family": "monai", "class": "SegResNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2,
         "init_filters": 4, "blocks_down": [1, 1], "blocks_up": [1], "norm": ["GROUP", {"num_groups": 2}]},
        (1, 1, 16, 16, 16), False,
    ),
    "monai-attentionunet": (
        {"family": "monai", "class": "AttentionUnet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2,
         "channels": [4, 8, 16], "strides": [2, 2]},
        (1, 1, 32, 32), False,
    ),
    "monai-flexibleunet": (
        {"family": "monai", "class": "FlexibleUNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2,
         "backbone": "efficientnet-b0", "decoder_channels": [16, 8, 8, 4, 4]},
        (1, 1, 64, 64), False,
    ),
    "smp-unet-resnet18": ({"family": SMP, "class": "Unet", **R18, "decoder_channels": [16, 8, 4]}, (1, 1, 32, 32), True),
    "smp-unetplusplus": (
        {"family": SMP, "class": "UnetPlusPlus", **R18, "decoder_channels": [16, 8, 4]}, (1, 1, 32, 32), True,
    ),
    "smp-fpn": ({"family": SMP, "class": "FPN", **R18, "decoder_pyramid_channels": 8,
                 "decoder_segmentation_channels": 32}, (1, 1, 32, 32), True),
    "smp-deeplabv3plus": (
        {"family": SMP, "class": "DeepLabV3Plus", "encoder_name": "resnet18", "in_channels": 1, "classes": 2,
         "decoder_channels": 8, "decoder_atrous_rates": [2, 4, 6]},
        (1, 1, 64, 64), True,
    ),
    "smp-linknet": ({"family": SMP, "class": "Linknet", **R18}, (1, 1, 32, 32), True),
    "smp-unet-efficientnet": (
        {"family": SMP, "class": "Unet", "encoder_name": "efficientnet-b0", "encoder_depth": 3, "in_channels": 1,
         "classes": 2, "decoder_channels": [16, 8, 4]},
        (1, 1, 32, 32), False,
    ),
    "tv-fcn": ({"family": TV, "class": "fcn_resnet50", "num_classes": 2, "aux_loss": True}, (1, 3, 32, 32), True),
    "tv-deeplabv3": ({"family": TV, "class": "deeplabv3_mobilenet_v3_large", "num_classes": 2}, (1, 3, 64, 64), False),
    "tv-lraspp": ({"family": TV, "class": "lraspp_mobilenet_v3_large", "num_classes": 2}, (1, 3, 64, 64), False),
}  # fmt: skip
SLOW = {"tv-fcn", "tv-deeplabv3", "monai-flexibleunet", "smp-deeplabv3plus"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _params(name: str) -> list:
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in name]


class SigmaConstantNorm(nn.Module):
    """Reference for the σ-constant rule: the same Instance/GroupNorm with σ detached."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        n = self.norm
        groups = n.num_groups if isinstance(n, nn.GroupNorm) else x.shape[1]
        g = x.reshape(x.shape[0], groups, -1)
        var = g.var(dim=2, unbiased=False, keepdim=True).detach()
        y = ((g - g.mean(dim=2, keepdim=True)) / torch.sqrt(var + n.eps)).reshape(x.shape)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if n.weight is not None:
            y = y * n.weight.reshape(shape) + n.bias.reshape(shape)
        return y


def sigma_constant_copy(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, (nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)):
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, SigmaConstantNorm(module))
    return model


def randomize_batchnorm(model: nn.Module) -> None:
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_((torch.rand(n, generator=gen) - 0.5) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)


def network(name: str) -> tuple[nn.Module, Tensor]:
    arch, shape, _ = ARCHS[name]
    torch.manual_seed(0)
    model = Logits(build_model(arch)).double().eval()
    with torch.no_grad():
        randomize_batchnorm(model)
    return model, torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("name", _params(ARCHS))
def test_every_composite_gives_finite_relevance(name: str) -> None:
    model, x = network(name)
    for composite in lrp.COMPOSITES:
        expl = lrp.explain(model, x, target="all", rules=composite, bounds=(-3.0, 3.0))
        assert expl.relevance.shape == x.shape, composite
        assert bool(torch.isfinite(expl.relevance).all()), composite
        assert float(expl.relevance.abs().sum()) > 0, composite


@pytest.mark.parametrize("name", _params([n for n, (_, _, linear) in ARCHS.items() if linear]))
def test_lrp0_equals_gradient_times_input(name: str) -> None:
    """LRP-0 (Zero on every layer, Pass on activations, z-rule with a vanishing stabiliser on
    sums/upsampling/pooling/norms) == Gradient×Input of the model (σ of norms held constant)."""
    model, x = network(name)
    prepared = lrp.prepare(model, x)
    logits = prepared.forward(x)[1]
    mask = (torch.rand(logits.shape, generator=torch.Generator().manual_seed(3)) > 0.5).to(logits)
    exact = {i.name: lrp.Norm(1e-300) for i in prepared.infos.values() if i.kind.value in ("norm", "add", "stats")}
    relevance = lrp.propagate(model, x, logits * mask, rules={"*": lrp.Zero(), **exact})
    xg = x.clone().requires_grad_()
    out = sigma_constant_copy(model)(xg)
    assert torch.allclose(out, logits, rtol=1e-9, atol=1e-9)
    (g,) = torch.autograd.grad(out, xg, mask)
    expected = g * x
    assert float((relevance - expected).abs().max() / expected.abs().max()) < 1e-6


def test_exported_graph_is_used_where_fx_cannot_trace() -> None:
    """smp's UnetPlusPlus checks the input shape in Python: it is explained through its aten graph."""
    model, x = network("smp-unetplusplus")
    prepared = lrp.prepare(model, x)
    assert prepared.shape == tuple(x.shape)
    assert any(i.node.op == "call_module" and "encoder.layer1" in i.name for i in prepared.infos.values())


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ({"family": "monai", "class": "Nope", "in_channels": 1, "out_channels": 2}, "must be one of"),
        ({"family": SMP, "class": "Unet", "in_channels": 1, "classes": 2, "encoder_weights": "imagenet"}, "download"),
        ({"family": TV, "class": "fcn_resnet50", "num_classes": 2, "weights_backbone": "DEFAULT"}, "download"),
        (
            {
                "family": "monai",
                "class": "FlexibleUNet",
                "in_channels": 1,
                "out_channels": 2,
                "backbone": "efficientnet-b0",
                "pretrained": True,
            },
            "download",
        ),  # fmt: skip
        ({"family": "monai", "class": "UNet", "in_channels": 1, "out_channels": 2}, "cannot build"),
    ],
)
def test_bad_architectures_are_refused(arch: dict, message: str) -> None:
    with pytest.raises(FamilyError, match=message):
        build_model(arch)


def fold_consecutive_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm into the Conv registered just before it in the same parent
    (Sequential conv-bn pairs, ResNet's conv1/bn1 and conv2/bn2): the BN-folded network."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        children = list(parent.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(parent, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(parent, bn_name, nn.Identity())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    return model


@pytest.mark.parametrize(
    "composite",
    ["ours", *(pytest.param(c, marks=pytest.mark.slow) for c in ("epsilon", "epsilon-plus-flat", "montavon"))],
)
def test_smp_resnet_unet_equals_zennit_with_its_resnet_canonizer(composite: str) -> None:
    """smp Unet on a torchvision resnet encoder, BN folded: zennit's ResNet canonizer (a Sum module
    with the Norm rule in each BasicBlock) + the same layer->rule map gives our relevance."""
    import zennit.rules as zr
    from zennit.attribution import Gradient
    from zennit.composites import NameMapComposite
    from zennit.torchvision import ResNetCanonizer

    from tests.lrpseg.lrp.zennit_bridge import max_rel_diff, to_zennit

    model, x = network("smp-unet-resnet18")
    folded = fold_consecutive_batchnorm(model)
    logits = folded(x).detach()  # a constant r_out: the relevance then tracks nothing
    r_out = logits * (logits.argmax(1, keepdim=True) == torch.arange(2).view(1, 2, 1, 1)).to(logits)
    prepared = lrp.prepare(folded, x)
    rules = prepared.resolve(composite, (-3.0, 3.0))
    name_map = [((name,), to_zennit(rule)) for name, rule in rules.items()]
    # zennit splits F.interpolate (nearest) by the gradient; the z-rule equals it without a stabiliser
    upsampling = {i.name: lrp.Norm(1e-300) for i in prepared.infos.values() if "interpolate" in i.name}
    assert upsampling
    name_map += [((n,), zr.Pass()) for n, m in folded.named_modules() if isinstance(m, nn.ReLU)]
    canonizer = ResNetCanonizer()
    with Gradient(model=folded, composite=NameMapComposite(name_map=name_map, canonizers=[canonizer])) as attributor:
        for module in folded.modules():  # the canonizer's Sum modules: the Norm rule (= our add)
            if type(module).__name__ == "Sum":
                zr.Norm().register(module)
        _, theirs = attributor(x.clone(), r_out)
    ours = lrp.propagate(folded, x, r_out, rules={**rules, **upsampling})
    assert max_rel_diff(ours, theirs) < 1e-6
