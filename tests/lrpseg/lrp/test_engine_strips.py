"""Full-resolution layers in windows (lrpseg.lrp.strips): the same numbers as the whole-image sweep."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from lrpseg import lrp
from lrpseg.lrp import engine, strips
from lrpseg.lrp.bias_free import BiasFree
from lrpseg.lrp.engine import Rules
from lrpseg.lrp.reference_box import ReferenceBox
from lrpseg.lrp.rules import AlphaBeta, Epsilon, Gamma, ZBox, ZPlus
from lrpseg.models import UNet, UNetConfig
from tests.lrpseg.lrp.conftest import LeakyNet, randomize_batchnorm, tiny_unet

WHOLE = 1 << 40  # window pixels no image reaches: the whole-image sweep


def _unet(depth: int = 3) -> nn.Module:
    cfg = UNetConfig(in_channels=1, num_classes=2, depth=depth, base_width=4)
    return randomize_batchnorm(UNet(cfg)).double().eval()


def _run(model: nn.Module, x: torch.Tensor, rules: Rules, window_pixels: int) -> lrp.Propagation:
    lrp.prepare(model, x).window_pixels = window_pixels
    try:
        return lrp.run(model, x, lambda out: out, rules=rules, bounds=(-3.0, 3.0))
    finally:
        lrp.prepare(model, x).window_pixels = strips.WINDOW_PIXELS


def _assert_same(a: lrp.Propagation, b: lrp.Propagation, rtol: float = 1e-12) -> None:
    scale = a.relevance.abs().max()
    assert float((a.relevance - b.relevance).abs().max() / scale) <= rtol
    assert torch.allclose(a.logits, b.logits, rtol=rtol, atol=rtol * float(a.logits.abs().max()))
    assert torch.allclose(a.bias, b.bias, rtol=rtol, atol=0)
    assert a.stabilizer is not None and b.stabilizer is not None
    assert torch.allclose(a.stabilizer, b.stabilizer, rtol=1e-9, atol=1e-9 * float(a.r_out.abs().sum()))


CASES: dict[str, Callable[[], tuple[nn.Module, torch.Tensor]]] = {
    "unet-depth3": lambda: (_unet(), torch.randn(2, 1, 48, 40, dtype=torch.float64)),
    "unet-padded": lambda: (tiny_unet("transpose"), torch.randn(1, 1, 37, 18, dtype=torch.float64)),
    "leaky": lambda: (LeakyNet().double().eval(), torch.randn(2, 3, 8, 8, dtype=torch.float64)),
}
COMPOSITES: dict[str, Rules] = {
    "conserving-reference": "conserving-reference",
    "conserving": "conserving",
    "conserving-local": "conserving-local",
    "alphabeta-nobias": {"*": BiasFree(AlphaBeta(2.0, 1.0))},  # LeakyNet: x- terms (mixed signs)
    "gamma-nobias": {"*": BiasFree(Gamma(0.25))},
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("composite", list(COMPOSITES))
def test_windows_give_the_whole_image_numbers(case: str, composite: str) -> None:
    model, x = CASES[case]()
    rules = COMPOSITES[composite]
    prepared = lrp.prepare(model, x)
    prepared.window_pixels = 4 * x.shape[-1]  # windows of a few rows: every edge case at once
    plan = prepared.strips(prepared.resolve(rules, (-3.0, 3.0)), x)
    assert plan is not None and plan.window_rows < plan.rows  # the windowed path is what runs
    _assert_same(_run(model, x, rules, WHOLE), _run(model, x, rules, 4 * x.shape[-1]))


def test_a_short_halo_changes_the_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The halo is needed: without it the windows' edges are wrong (the test above can fail)."""
    model, x = CASES["unet-depth3"]()
    whole = _run(model, x, "conserving-reference", WHOLE)

    def short(*args: object, **kwargs: object) -> strips.StripPlan | None:
        plan = strips.plan_strips(*args, **kwargs)  # type: ignore[arg-type]
        for segment in plan.segments if plan else ():
            segment.halo = 0
        return plan

    monkeypatch.setattr(engine, "plan_strips", short)
    windowed = _run(model, x, "conserving-reference", 2 * x.shape[-1])
    assert float((whole.relevance - windowed.relevance).abs().max() / whole.relevance.abs().max()) > 1e-6


def test_windows_keep_no_full_resolution_value_but_the_input() -> None:
    model, x = CASES["unet-depth3"]()
    prepared = lrp.prepare(model, x)
    rules = prepared.resolve("conserving-reference", (-3.0, 3.0))
    prepared.window_pixels = 4 * x.shape[-1]
    try:
        plan = prepared.strips(rules, x)
        env, logits = prepared.forward_lean(x, prepared.kept(rules, plan), plan)
    finally:
        prepared.window_pixels = strips.WINDOW_PIXELS
    rows = x.shape[-2]
    full = {
        v.untyped_storage().data_ptr()
        for v in env.values()
        if isinstance(v, torch.Tensor) and v.shape[-2:] == x.shape[-2:]
    }
    assert full == {x.untyped_storage().data_ptr(), logits.untyped_storage().data_ptr()}  # the input and the logits
    assert isinstance(env, engine.Env)
    assert not env.indices or all(v.shape[-2] < rows // 2 for v in env.indices.values())  # top pools: no indices


def test_small_inputs_and_non_local_rules_run_whole() -> None:
    model, x = CASES["unet-depth3"]()
    prepared = lrp.prepare(model, x)
    assert prepared.strips(prepared.resolve("conserving-reference", (-3.0, 3.0)), x) is None  # one window
    prepared.window_pixels = 2 * x.shape[-1]
    try:
        relative = prepared.strips(prepared.resolve({"*": Epsilon(0.25, relative=True)}, (-3.0, 3.0)), x)
    finally:
        prepared.window_pixels = strips.WINDOW_PIXELS
    assert relative is None  # the relative epsilon reads the whole layer


@pytest.mark.parametrize(
    ("rule", "bias", "expected"),
    [
        (BiasFree(ZPlus()), torch.ones(2), 0),
        (ZPlus(), torch.ones(2), None),  # its bias relevance would be counted in every halo
        (ZPlus(), None, 0),
        (BiasFree(Epsilon(0.25, relative=True)), None, None),
        (BiasFree(Epsilon(1e-6)), torch.ones(2), 0),
        (ReferenceBox(window=9), torch.ones(2), 4),
        (ZBox(-1.0, 1.0), torch.ones(2), 0),
        (ZBox(torch.zeros(1, 1, 5, 5), torch.ones(1, 1, 5, 5)), torch.ones(2), None),
    ],
)
def test_window_extra(rule: lrp.Rule, bias: torch.Tensor | None, expected: int | None) -> None:
    assert strips.window_extra(rule, bias) == expected


def test_windows_cover_every_row_once() -> None:
    found = list(strips.windows(50, 16, 4))
    assert [(s, e) for _, s, e, _ in found] == [(0, 16), (16, 32), (32, 48), (48, 50)]
    assert [(lo, hi) for lo, _, _, hi in found] == [(0, 20), (12, 36), (28, 50), (44, 50)]
