"""Bias-free rules against zennit's `zero_params='bias'` on a BN-folded U-Net (float64).

Gamma is left out on purpose: zennit's Gamma(zero_params='bias') picks each unit's
sign from the output *with* bias but divides by sums without it, which blows up
where the two disagree; the conserving composite does not use it.
"""

from __future__ import annotations

import pytest
import torch

from lrpseg import lrp
from lrpseg.lrp.bias_free import BiasFree
from tests.lrpseg.lrp.conftest import LeakyNet, tiny_unet
from tests.lrpseg.lrp.zennit_bridge import max_rel_diff, zennit_relevance

TOL = 1e-6

RULES = {
    "zplus": lambda: lrp.ZPlus(),
    "epsilon": lambda: lrp.Epsilon(1e-6),
    "epsilon-relative": lambda: lrp.Epsilon(0.25, relative=True),
    "alphabeta": lambda: lrp.AlphaBeta(2.0, 1.0),
    "zbox": lambda: lrp.ZBox(-3.0, 3.0),
}


def _both(model, x, rules):
    with torch.no_grad():
        logits = lrp.prepare(model).forward(x)[1]
    r_out = logits * (torch.rand(logits.shape, generator=torch.Generator().manual_seed(3)) > 0.3)
    bounds = (x.amin(), x.amax())
    ours = lrp.propagate(model, x, r_out, rules=rules, bounds=bounds)
    theirs = zennit_relevance(model, x, r_out, lrp.prepare(model).resolve(rules, bounds))
    return ours, theirs


@pytest.mark.parametrize("rule_name", list(RULES))
@pytest.mark.parametrize("model_name", ["unet", "leaky"])
def test_bias_free_rule_equals_zennit(rule_name: str, model_name: str) -> None:
    torch.manual_seed(0)
    if model_name == "unet":
        model, x = tiny_unet("transpose"), torch.randn(2, 1, 20, 24, dtype=torch.float64)
    else:
        model, x = LeakyNet().double().eval(), torch.randn(2, 3, 8, 8, dtype=torch.float64)
    ours, theirs = _both(model, x, {"*": BiasFree(RULES[rule_name]())})
    assert max_rel_diff(ours, theirs) <= TOL


def test_bias_free_differs_from_the_rule_with_bias() -> None:
    """The folded U-Net has biases: dropping them must change the map (else the test proves nothing)."""
    torch.manual_seed(0)
    model, x = tiny_unet("transpose"), torch.randn(2, 1, 20, 24, dtype=torch.float64)
    with_bias, _ = _both(model, x, {"*": lrp.ZPlus()})
    without, _ = _both(model, x, {"*": BiasFree(lrp.ZPlus())})
    assert max_rel_diff(with_bias, without) > 1e-3


def test_bias_free_zplus_conserves_all_but_the_stabiliser() -> None:
    """z+ without biases: every bit of positive r_out reaches the input or the ε of a dead unit."""
    torch.manual_seed(0)
    model, x = tiny_unet("transpose"), torch.randn(2, 1, 20, 24, dtype=torch.float64)
    e = lrp.explain(model, x, target="class", cls=1, rules={"*": BiasFree(lrp.ZPlus())})
    assert torch.all(e.bias_share == 0)
    torch.testing.assert_close(e.conservation + e.stabilizer_share, torch.ones_like(e.conservation))


def test_bias_free_refuses_non_parametric_rules() -> None:
    with pytest.raises(ValueError, match="parametric"):
        BiasFree(lrp.Pass())


def test_conserving_composite_equals_zennit() -> None:
    torch.manual_seed(0)
    model, x = tiny_unet("transpose"), torch.randn(2, 1, 20, 24, dtype=torch.float64)
    resolved = lrp.prepare(model).resolve("conserving", (x.amin(), x.amax()))
    assert {type(r).__name__ for r in resolved.values()} == {"ZBox", "BiasFree"}
    ours, theirs = _both(model, x, "conserving")
    assert max_rel_diff(ours, theirs) <= TOL


def test_conserving_local_composite_equals_zennit() -> None:
    torch.manual_seed(0)
    model, x = tiny_unet("transpose"), torch.randn(2, 1, 20, 24, dtype=torch.float64)
    resolved = lrp.prepare(model).resolve("conserving-local", (x.amin(), x.amax()))
    inner = {type(r.inner).__name__ for r in resolved.values() if isinstance(r, BiasFree)}
    assert len(resolved) == sum(isinstance(r, BiasFree) for r in resolved.values()) and inner == {"AlphaBeta", "ZPlus"}
    ours, theirs = _both(model, x, "conserving-local")
    assert max_rel_diff(ours, theirs) <= TOL
