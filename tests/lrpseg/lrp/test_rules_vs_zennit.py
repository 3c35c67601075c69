"""Every rule and composite against zennit, on the same pre-folded network and rule map (float64)."""

from __future__ import annotations

import pytest
import torch

from lrpseg import lrp
from tests.lrpseg.lrp.conftest import LeakyNet, ResidualUNet, tiny_unet, tiny_vgg
from tests.lrpseg.lrp.zennit_bridge import max_rel_diff, zennit_relevance

TOL = 1e-6

RULES = {
    "epsilon": lambda: lrp.Epsilon(1e-6),
    "epsilon-relative": lambda: lrp.Epsilon(0.25, relative=True),
    "zero": lambda: lrp.Zero(),
    "norm": lambda: lrp.Norm(),
    "gamma": lambda: lrp.Gamma(0.25),
    "gamma-large": lambda: lrp.Gamma(2.0),
    "alphabeta21": lambda: lrp.AlphaBeta(2.0, 1.0),
    "alphabeta10": lambda: lrp.AlphaBeta(1.0, 0.0),
    "zplus": lambda: lrp.ZPlus(),
    "zbox": lambda: lrp.ZBox(-3.0, 3.0),
    "flat": lambda: lrp.Flat(),
    "wsquare": lambda: lrp.WSquare(),
}

MODELS = {
    "unet-transpose-bn": lambda: (tiny_unet("transpose"), torch.randn(2, 1, 20, 24, dtype=torch.float64)),
    "unet-bilinear-bn": lambda: (tiny_unet("bilinear"), torch.randn(2, 1, 19, 22, dtype=torch.float64)),
    "vgg-128n": lambda: (tiny_vgg("128n"), torch.randn(2, 1, 32, 32, dtype=torch.float64)),
    "vgg-onefc": lambda: (tiny_vgg("one-fc"), torch.randn(2, 1, 32, 32, dtype=torch.float64)),
    "leaky-avgpool": lambda: (LeakyNet().double().eval(), torch.randn(2, 3, 8, 8, dtype=torch.float64)),
}


def _compare(model, x, rules, reference=None) -> float:
    with torch.no_grad():
        logits = lrp.prepare(model).forward(x)[1]
    r_out = logits * (torch.rand_like(logits) > 0.3)
    bounds = (x.amin(), x.amax())
    ours = lrp.propagate(model, x, r_out, rules=rules, bounds=bounds)
    resolved = lrp.prepare(model).resolve(rules, bounds)
    theirs = zennit_relevance(model, x, r_out, resolved, reference)
    assert ours.shape == x.shape
    return max_rel_diff(ours, theirs)


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("rule_name", list(RULES))
def test_rule_equals_zennit(model_name: str, rule_name: str) -> None:
    model, x = MODELS[model_name]()
    assert _compare(model, x, {"*": RULES[rule_name]()}) <= TOL


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("composite", ["conserving", "montavon", "ours", "epsilon-gamma-box", "epsilon-plus-flat"])
def test_composite_equals_zennit(model_name: str, composite: str) -> None:
    model, x = MODELS[model_name]()
    assert _compare(model, x, composite) <= TOL


@pytest.mark.parametrize("rule_name", ["epsilon", "gamma", "alphabeta21", "zplus", "zbox"])
def test_additive_skips_equal_zennit_sum_with_norm(rule_name: str) -> None:
    """`a + b` in our engine == zennit's Sum module with the Norm rule (proportional split)."""
    ours_model = ResidualUNet().double().eval()
    ref = ResidualUNet(sum_module=True).double().eval()
    ref.load_state_dict(ours_model.state_dict())
    x = torch.randn(2, 1, 12, 16, dtype=torch.float64)
    assert _compare(ours_model, x, {"*": RULES[rule_name]()}, reference=ref) <= TOL


def test_tensor_bounds_for_zbox() -> None:
    """Per-channel z^B bounds (1, C, 1, 1), as a normalised RGB model implies."""
    model, x = LeakyNet().double().eval(), torch.randn(2, 3, 8, 8, dtype=torch.float64)
    low = torch.tensor([-2.0, -1.5, -1.0], dtype=torch.float64).reshape(1, 3, 1, 1)
    high = torch.tensor([2.0, 2.5, 3.0], dtype=torch.float64).reshape(1, 3, 1, 1)
    assert _compare(model, x, {"*": lrp.Epsilon(), "c1": lrp.ZBox(low, high)}) <= TOL
