"""Conservation, bias share and stabiliser share: measured separately, they add up to 1."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrpseg import lrp
from lrpseg.lrp.composites import COMPOSITES
from tests.lrpseg.lrp.conftest import ResidualUNet, tiny_unet


@pytest.mark.parametrize("composite", list(COMPOSITES))
@pytest.mark.parametrize("target", ["class", "all"])
def test_three_shares_add_up(composite: str, target: str) -> None:
    torch.manual_seed(0)
    model, x = tiny_unet("transpose"), torch.randn(2, 1, 20, 24, dtype=torch.float64)
    e = lrp.explain(model, x, target=target, cls=None if target == "all" else 1, rules=composite)
    total = e.conservation + e.bias_share + e.stabilizer_share
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-9)


def test_additive_skips_are_accounted() -> None:
    """`a + b` is stabilised (Norm): what its ε keeps is in the stabiliser share too."""
    torch.manual_seed(0)
    model, x = ResidualUNet().double().eval(), torch.randn(2, 1, 12, 16, dtype=torch.float64)
    e = lrp.explain(model, x, target="class", cls=1, rules={"*": lrp.Epsilon(0.5)})
    total = e.conservation + e.bias_share + e.stabilizer_share
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-9)
    assert bool((e.stabilizer_share.abs() > 1e-4).all()) and bool((e.bias_share.abs() > 1e-4).all())


def test_shares_of_one_epsilon_layer_by_hand() -> None:
    """One conv with bias, LRP-ε: bias share Σ s·b, stabiliser share Σ s·ε·sign(z), s = r / (z + ε sign z)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    model = nn.Sequential(conv).eval()
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64)
    eps = 0.7
    e = lrp.explain(model, x, target="all", rules={"*": lrp.Epsilon(eps)})
    z = conv(x).detach()
    r = z * e.mask
    s = r / (z + torch.where(z >= 0, eps, -eps))
    reference = r.sum()
    bias = (s.sum(dim=(2, 3)) * conv.bias.detach()).sum()
    stab = (s * torch.where(z >= 0, eps, -eps)).sum()
    torch.testing.assert_close(e.bias_share[0], bias / reference, rtol=1e-7, atol=0)
    torch.testing.assert_close(e.stabilizer_share[0], stab / reference, rtol=1e-7, atol=0)
    assert float(e.stabilizer_share[0]) > 0.01  # a large ε: the share is not a rounding residue


def test_run_reports_the_stabiliser_per_sample() -> None:
    torch.manual_seed(0)
    model, x = tiny_unet("bilinear"), torch.randn(3, 1, 16, 16, dtype=torch.float64)
    p = lrp.run(model, x, lambda logits: logits, rules="ours")
    assert p.stabilizer is not None and p.stabilizer.shape == (3,)
    total = p.relevance.flatten(1).sum(1) + p.bias + p.stabilizer
    torch.testing.assert_close(total, p.r_out.flatten(1).sum(1), rtol=1e-9, atol=1e-9)
