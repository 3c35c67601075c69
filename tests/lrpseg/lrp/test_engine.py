"""Exactness, conservation, batching, caching and errors of the single-sweep engine."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrpseg import lrp
from lrpseg.lrp import strips
from tests.lrpseg.lrp.conftest import LeakyNet, ResidualUNet, tiny_unet, tiny_vgg

CASES = {
    "unet-transpose": lambda: (tiny_unet("transpose"), torch.randn(2, 1, 21, 18, dtype=torch.float64)),
    "unet-bilinear": lambda: (tiny_unet("bilinear"), torch.randn(2, 1, 16, 16, dtype=torch.float64)),
    "residual": lambda: (ResidualUNet().double().eval(), torch.randn(2, 1, 12, 12, dtype=torch.float64)),
    "vgg": lambda: (tiny_vgg(), torch.randn(2, 1, 32, 32, dtype=torch.float64)),
    "leaky": lambda: (LeakyNet().double().eval(), torch.randn(2, 3, 8, 8, dtype=torch.float64)),
}


def _grad_x_input(model: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    gm = lrp.prepare(model).gm  # the same folded network
    xg = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(gm(xg), xg, mask)
    return g * x


@pytest.mark.parametrize("case", [c for c in CASES if c != "leaky"])
def test_lrp0_equals_gradient_times_input(case: str) -> None:
    """LRP-0 + Pass on ReLU + Norm on upsampling/sums == Gradient x Input, exactly."""
    model, x = CASES[case]()
    logits = lrp.prepare(model).forward(x)[1]
    mask = (torch.rand_like(logits) > 0.5).to(logits)
    # a vanishing stabiliser on upsampling and sums too (1e-300 only keeps 0/0 at 0)
    exact = {i.name: lrp.Norm(1e-300) for i in lrp.prepare(model).infos.values() if i.kind.value in ("norm", "add")}
    relevance = lrp.propagate(model, x, logits * mask, rules={"*": lrp.Zero(), **exact})
    expected = _grad_x_input(model, x, mask)
    assert float((relevance - expected).abs().max() / expected.abs().max()) < 1e-10


def _bias_free_unit_scale(model: nn.Module, x: torch.Tensor) -> None:
    """Zero the biases and scale each layer to unit output RMS (else the 1e-6 stabiliser dominates)."""

    def rescale(module: nn.Module, _: object, out: torch.Tensor) -> None:
        module.weight.div_(out.pow(2).mean().sqrt())

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.zeros_(m.bias)
                handle = m.register_forward_hook(rescale)
                model(x)
                handle.remove()


@pytest.mark.parametrize("head", ["128n", "one-fc"])
def test_bias_free_zplus_conserves(head: str) -> None:
    """Every layer ReLU-gated (z+ >= z > 0 where relevance flows): ZPlus loses only its 1e-6 stabiliser.

    (Layers whose output is not ReLU-gated, like a U-Net's up-convolution, lose the
    relevance of negative outputs with no positive contribution — by design of z+.)
    """
    model = tiny_vgg(head)
    x = torch.rand(6, 1, 32, 32, dtype=torch.float64)
    _bias_free_unit_scale(model, x)
    result = lrp.run(model, x, lambda logits: logits.clamp(min=0), rules={"*": lrp.ZPlus()})
    total = result.r_out.flatten(1).sum(1)
    explained = total > 0  # samples with some positive logit
    assert int(explained.sum()) >= 2
    conservation = result.relevance.flatten(1).sum(1)[explained] / total[explained]
    assert torch.allclose(conservation, torch.ones_like(conservation), atol=1e-4)
    assert torch.equal(result.bias, torch.zeros(6, dtype=torch.float64))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("composite", ["ours", "montavon", "epsilon-gamma-box"])
def test_batch_equals_images_one_by_one(case: str, composite: str) -> None:
    model, x = CASES[case]()
    bounds = (-4.0, 4.0)
    whole = lrp.propagate(model, x, lambda out: out, rules=composite, bounds=bounds)
    for i in range(x.shape[0]):
        single = lrp.propagate(model, x[i : i + 1], lambda out: out, rules=composite, bounds=bounds)
        assert torch.allclose(whole[i : i + 1], single, rtol=1e-9, atol=1e-12)


def test_conservation_and_bias_share_are_reported_consistently() -> None:
    model, x = CASES["unet-transpose"]()
    expl = lrp.explain(model, x, target="all", rules={"*": lrp.Epsilon(1e-9)})
    total = expl.r_out.flatten(1).sum(1)
    assert torch.allclose(expl.conservation, expl.relevance.flatten(1).sum(1) / total)
    # with a vanishing epsilon, what biases absorb is exactly what the input misses
    assert torch.allclose(expl.conservation + expl.bias_share, torch.ones_like(total), atol=1e-6)
    assert torch.allclose(expl.channel_shares.sum(1), torch.ones_like(total))


def test_region_normalized_equals_per_location_sum() -> None:
    """Seed 003's M_A = Σ_a M_a / ΣM_a, computed without a pixel loop, equals the loop."""
    model, x = CASES["unet-bilinear"]()
    pixels = [(2, 3), (7, 7), (12, 5), (15, 15)]
    region = torch.zeros(16, 16)
    for i, j in pixels:
        region[i, j] = 1
    expl = lrp.explain(model, x, target="region-normalized", cls=1, region=region, rules="ours", bounds=(-4, 4))
    expected = torch.zeros_like(x)
    for i, j in pixels:
        r_out = torch.zeros_like(expl.logits)
        r_out[:, 1, i, j] = expl.logits[:, 1, i, j]
        m_a = lrp.propagate(model, x, r_out, rules="ours", bounds=(-4, 4))
        expected += m_a / m_a.flatten(1).sum(1).reshape(-1, 1, 1, 1)
    assert float((expl.relevance - expected).abs().max() / expected.abs().max()) < 1e-9
    assert torch.allclose(expl.conservation, torch.ones(2, dtype=torch.float64))


def test_targets() -> None:
    model, x = CASES["unet-transpose"]()
    expl = lrp.explain(model, x, target="all", rules="epsilon")
    pred = expl.logits.argmax(1)
    assert torch.equal(expl.mask.argmax(1), pred) and torch.all(expl.mask.sum(1) == 1)
    expl = lrp.explain(model, x, target="class", cls=0, rules="epsilon")
    assert torch.equal(expl.mask[:, 0].bool(), pred == 0) and not expl.mask[:, 1].any()
    with pytest.raises(ValueError, match="out of range"):
        lrp.explain(model, x, target="class", cls=5)
    with pytest.raises(ValueError, match="needs both"):
        lrp.explain(model, x, target="region", cls=1)
    with pytest.raises(ValueError, match="region has size"):
        lrp.explain(model, x, target="region", cls=1, region=torch.ones(4, 4))
    vgg, xv = CASES["vgg"]()
    expl = lrp.explain(vgg, xv, target="class", rules="ours")  # classifier: predicted class
    assert torch.equal(expl.mask.argmax(1), expl.logits.argmax(1))


def test_prepared_once_and_weights_cached() -> None:
    model, x = CASES["unet-transpose"]()
    first = lrp.prepare(model)
    lrp.propagate(model, x, lambda out: out, rules="ours", bounds=(-4, 4))
    caches = {name: dict(info.layer._cache) for name, info in first.by_name.items() if info.layer}
    lrp.propagate(model, x, lambda out: out, rules="ours", bounds=(-4, 4))
    assert lrp.prepare(model) is first
    for name, info in first.by_name.items():
        if info.layer:
            assert {k: id(v[0]) for k, v in info.layer._cache.items()} == {k: id(v[0]) for k, v in caches[name].items()}
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())
    with torch.no_grad():
        model.head.weight.mul_(2)  # in-place change: re-prepared
    assert lrp.prepare(model) is not first


def test_user_model_is_not_modified() -> None:
    model, x = CASES["unet-transpose"]()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lrp.propagate(model, x, lambda out: out, rules="montavon")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # folded only in the copy


class _Square(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y * y  # neither factor is a gate


class _CumSum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(self.conv(x), dim=1)


def test_unsupported_ops_are_named() -> None:
    with pytest.raises(lrp.UnsupportedOperationError, match="function 'mul' at graph node 'mul'"):
        lrp.propagate(_Square().eval(), torch.randn(1, 1, 5, 5), torch.ones(1, 2, 3, 3))
    with pytest.raises(lrp.UnsupportedOperationError, match="function 'cumsum' at graph node 'cumsum'"):
        lrp.propagate(_CumSum().eval(), torch.randn(1, 1, 5, 5), torch.ones(1, 2, 3, 3))


def test_rule_map_errors() -> None:
    model, x = CASES["leaky"]()
    with pytest.raises(lrp.RuleError, match="unknown layers \\['nope'\\]"):
        lrp.propagate(model, x, lambda o: o, rules={"nope": lrp.Epsilon(), "*": lrp.Epsilon()})
    with pytest.raises(lrp.RuleError, match="no rule for layers"):
        lrp.propagate(model, x, lambda o: o, rules={"c1": lrp.Epsilon()})
    with pytest.raises(KeyError, match="unknown composite"):
        lrp.propagate(model, x, lambda o: o, rules="nonsense")
    with pytest.raises(ValueError, match="r_out has shape"):
        lrp.propagate(model, x, torch.ones(3), rules="epsilon")


def test_vgg_composites_reproduce_seed001_table1() -> None:
    """Table 1 of seed 001 on VGG-11: conv1_1 .. conv5_2 and the FC layers."""
    model = tiny_vgg("128n")
    prepared = lrp.prepare(model)
    convs = [n for n in prepared.param_names if n.startswith("features")]
    fcs = [n for n in prepared.param_names if n.startswith("classifier")]
    ours = prepared.resolve("ours", (0.0, 1.0))
    montavon = prepared.resolve("montavon", (0.0, 1.0))
    names = lambda rmap, layers: [rmap[n].name for n in layers]  # noqa: E731
    assert names(ours, convs) == ["zbox", "alphabeta", "alphabeta"] + ["gamma"] * 5
    assert names(montavon, convs) == ["zbox"] + ["gamma"] * 3 + ["epsilon"] * 4
    assert names(ours, fcs) == ["epsilon"] * 3 and all(ours[n].relative for n in fcs)
    assert names(montavon, fcs) == ["zero"] * 3


def test_unet_composite_roles_follow_data_flow() -> None:
    prepared = lrp.prepare(tiny_unet("transpose"))
    ours = prepared.resolve("ours", (0.0, 1.0))
    assert ours["encoders.0.0"].name == "zbox"  # first in data flow
    assert all(ours[n].name == "epsilon" for n in prepared.param_names if n.startswith(("ups", "decoders", "head")))
    montavon = prepared.resolve("montavon", (0.0, 1.0))
    assert montavon["head"].name == "zero" and montavon["bottleneck.0"].name == "epsilon"
    assert montavon["encoders.0.0"].name == "zbox" and montavon["encoders.0.3"].name == "gamma"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    model, x = CASES["unet-transpose"]()
    cpu = lrp.propagate(model, x, lambda o: o, rules="ours", bounds=(-4, 4))
    gpu = lrp.propagate(model.cuda(), x.cuda(), lambda o: o, rules="ours", bounds=(-4, 4))
    assert torch.allclose(cpu, gpu.cpu(), rtol=1e-9, atol=1e-12)


class _InstanceNormNet(nn.Module):
    """conv -> InstanceNorm -> PReLU -> conv, as MONAI's units are built."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 3, padding=1)
        self.n = nn.InstanceNorm2d(6, affine=True)
        self.a = nn.PReLU()
        self.c2 = nn.Conv2d(6, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(self.a(self.n(self.c1(x))))


def test_convolutions_run_contiguous_where_an_instance_norm_sits_between_them() -> None:
    """An InstanceNorm makes its input contiguous, so channels-last would reorder at every conv;
    the layout changes the speed only: the relevance equals the channels-last sweep's."""
    torch.manual_seed(0)
    model = _InstanceNormNet().double().eval()
    x = torch.randn(2, 1, 9, 11, dtype=torch.float64)
    prepared = lrp.prepare(model)
    assert not prepared.channels_last and prepared.gm.c1.weight.is_contiguous()
    assert lrp.prepare(tiny_unet("transpose")).channels_last
    relevance = lrp.propagate(model, x, lambda out: out, rules="epsilon")
    prepared.channels_last = True
    for conv in (prepared.gm.c1, prepared.gm.c2):
        conv.to(memory_format=torch.channels_last)
    assert torch.allclose(lrp.propagate(model, x, lambda out: out, rules="epsilon"), relevance, rtol=1e-10, atol=1e-12)


def test_small_inputs_keep_what_the_sweep_reads_and_large_ones_recompute_it() -> None:
    """Cheap values (activations, widening convolutions) are recomputed where read only where memory
    counts (inputs beyond window_pixels); the relevance is the same either way, bit for bit."""
    model, x = CASES["unet-transpose"]()
    prepared = lrp.prepare(model)
    rules = prepared.resolve("ours", (-3.0, 3.0))
    _, cheap, lean = prepared.plan(rules)
    assert cheap and not cheap & lean
    assert not prepared.recomputes(x) and cheap <= prepared.kept(rules, x=x)
    small = lrp.propagate(model, x, lambda out: out, rules="ours", bounds=(-3.0, 3.0))
    prepared.window_pixels = x[0, 0].numel()  # the two samples together exceed it
    try:
        assert prepared.recomputes(x) and prepared.kept(rules, x=x) == lean
        large = lrp.propagate(model, x, lambda out: out, rules="ours", bounds=(-3.0, 3.0))
    finally:
        prepared.window_pixels = strips.WINDOW_PIXELS
    assert torch.equal(small, large)
