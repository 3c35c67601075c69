"""The elementwise pieces the rules are built from: float-only stabiliser, x- terms on the
input channels that hold negatives only, and the two-sided sum (float64 unless stated)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from lrpseg import lrp
from lrpseg.lrp.layers import Layer, clamp_neg, clamp_pos, column_min
from lrpseg.lrp.rules import stabilize
from tests.lrpseg.lrp.zennit_bridge import max_rel_diff, zennit_relevance

TOL = 1e-6


def _where_stabilize(z: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """zennit's formula written with torch.where: z + eps * sign(z), sign(0) = +1."""
    eps_t = torch.as_tensor(eps, dtype=z.dtype)
    return z + torch.where(z >= 0, eps_t, -eps_t)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stabilize_is_bitwise_the_where_formula_at_signed_zeros(dtype: torch.dtype) -> None:
    z = torch.tensor([[-0.0, 0.0, 1e-7, -1e-7], [-3.0, 2.5, float("inf"), -float("inf")]], dtype=dtype)
    for eps in (1e-6, 0.25, torch.tensor([[0.5], [1e-3]], dtype=dtype)):  # per-sample: relative epsilon
        got, expected = stabilize(z, eps), _where_stabilize(z, eps)
        assert torch.equal(got, expected) and bool((got[0, :2] > 0).all())  # -0.0 gets +eps as 0 does
    assert bool(stabilize(torch.tensor([float("nan")], dtype=dtype), 1e-6).isnan().all())


def _cat_input(generator: torch.Generator) -> torch.Tensor:
    """A decoder-like input: 3 channels >= 0 (a ReLU'd skip), 2 mixed, 1 >= 0 again."""
    skip = torch.randn(2, 3, 9, 8, dtype=torch.float64, generator=generator).relu()
    up = torch.randn(2, 2, 9, 8, dtype=torch.float64, generator=generator)
    tail = torch.randn(2, 1, 9, 8, dtype=torch.float64, generator=generator).relu()
    return torch.cat([skip, up, tail], dim=1)


def test_negative_channels_is_the_range_holding_negatives() -> None:
    g = torch.Generator().manual_seed(0)
    layer = Layer(nn.Conv2d(6, 4, 3, padding=1).double())
    x = _cat_input(g)
    assert layer.negative_channels(x) == slice(3, 5)
    assert layer.negative_channels(x.contiguous(memory_format=torch.channels_last)) == slice(3, 5)
    assert layer.negative_channels(x, nonneg=True) is None
    assert layer.negative_channels(x.relu()) is None
    x[0, 0, 0, 0] = float("nan")  # NaN is not known to be >= 0: taken as negative
    assert layer.negative_channels(x) == slice(0, 5)
    grouped = Layer(nn.Conv2d(6, 4, 3, padding=1, groups=2).double())
    assert grouped.negative_channels(_cat_input(g)) == slice(0, 6)  # no subsets of groups
    linear = Layer(nn.Linear(6, 3).double())
    flat = torch.cat([torch.rand(4, 2, dtype=torch.float64), -torch.rand(4, 1, dtype=torch.float64)], 1)
    assert linear.negative_channels(torch.cat([flat, flat.abs()], 1)) == slice(2, 3)


class _Decoder(nn.Module):
    """One convolution over cat(ReLU'd skip, mixed): only some input channels are negative."""

    def __init__(self, relu: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(6, 5, 3, padding=1)
        self.act = nn.ReLU() if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.act(self.conv(x))
        return out


RULES: dict[str, Callable[[], lrp.Rule]] = {
    "zplus": lambda: lrp.ZPlus(),
    "alphabeta": lambda: lrp.AlphaBeta(2.0, 1.0),
    "gamma": lambda: lrp.Gamma(0.25),
    "gamma-large": lambda: lrp.Gamma(2.0),
}


@pytest.mark.parametrize("relu", [True, False])  # gamma: all relevance at z > 0 or not
@pytest.mark.parametrize("rule_name", list(RULES))
def test_rules_on_partly_negative_inputs_equal_zennit(rule_name: str, relu: bool) -> None:
    torch.manual_seed(0)
    model = _Decoder(relu).double().eval()
    x = _cat_input(torch.Generator().manual_seed(1))
    with torch.no_grad():
        r_out = model(x) * (torch.rand(2, 5, 9, 8, dtype=torch.float64) > 0.3)
    ours = lrp.propagate(model, x, r_out, rules={"*": RULES[rule_name]()})
    theirs = zennit_relevance(model, x, r_out, {"conv": RULES[rule_name]()})
    assert max_rel_diff(ours, theirs) <= TOL
    assert bool(ours[:, 3:5].lt(0).any() or ours[:, 3:5].gt(0).any())


def test_two_sided_under_autograd_equals_in_place() -> None:
    g = torch.Generator().manual_seed(2)
    layer = Layer(nn.Conv2d(6, 4, 3, padding=1).double())
    x = _cat_input(g)
    a = torch.randn(x.shape, dtype=torch.float64, generator=g)
    b = torch.randn(2, 2, 9, 8, dtype=torch.float64, generator=g)  # channels 3:5 only
    tracked = layer.two_sided(x, a.clone().requires_grad_(), b.clone().requires_grad_(), slice(3, 5))
    expected = a * x.clamp(min=0)
    expected[:, 3:5] += b * x[:, 3:5].clamp(max=0)
    assert torch.equal(layer.two_sided(x, a.clone(), b, slice(3, 5)), expected)
    torch.testing.assert_close(tracked.detach(), expected, rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(16, 1, 3, 3), (2, 16, 1, 1)])  # one input channel; a 1x1 head
def test_derived_weights_keep_the_channels_last_strides(shape: tuple[int, int, int, int]) -> None:
    """Size-1 dimensions give a channels-last weight two valid stride sets; oneDNN's fast
    path takes only the one .to(memory_format=channels_last) gives (a clamp gives the other)."""
    conv = nn.Conv2d(shape[1], shape[0], shape[2]).to(memory_format=torch.channels_last)
    layer = Layer(conv)
    for kind, make in (("pos", clamp_pos), ("neg", clamp_neg)):
        assert layer.params(kind, make)[0].stride() == conv.weight.stride()
    assert (
        layer.stacked(["pos", "neg"]).stride()
        == nn.Conv2d(shape[1], 2 * shape[0], shape[2]).to(memory_format=torch.channels_last).weight.stride()
    )


def test_transposes_in_one_call_equal_one_call_each() -> None:
    g = torch.Generator().manual_seed(4)
    conv = nn.Conv2d(1, 6, 3, padding=1).double().to(memory_format=torch.channels_last)
    layer = Layer(conv)
    layer.params("pos", clamp_pos)
    layer.params("neg", clamp_neg)
    x = torch.randn(2, 1, 7, 9, dtype=torch.float64, generator=g).contiguous(memory_format=torch.channels_last)
    s = torch.randn(2, 6, 7, 9, dtype=torch.float64, generator=g).contiguous(memory_format=torch.channels_last)
    together = layer.transposes(s, ["plain", "pos", "neg"], x)
    for kind, t in zip(["plain", "pos", "neg"], together):
        assert t.shape == x.shape
        torch.testing.assert_close(t, layer.transpose(s, layer.params(kind)[0], x), rtol=1e-12, atol=0)


@pytest.mark.parametrize("rows", [1, 5, 255, 256, 257, 1000, 4096])
def test_column_min_equals_amin(rows: int) -> None:
    t = torch.randn(rows, 7, generator=torch.Generator().manual_seed(rows))
    assert torch.equal(column_min(t), t.amin(0))
    t[rows // 2, 3] = float("nan")
    assert torch.equal(column_min(t).isnan(), t.amin(0).isnan())
