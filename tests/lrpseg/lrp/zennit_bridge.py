"""Run zennit with exactly the layer->rule map our engine resolved (the reference)."""

from __future__ import annotations

import torch
import zennit.rules as zr
from torch import Tensor, nn
from zennit.attribution import Gradient
from zennit.composites import NameMapComposite
from zennit.core import Stabilizer
from zennit.layer import Sum

from lrpseg import lrp
from lrpseg.lrp.bias_free import BiasFree
from lrpseg.lrp.graph import Kind


def to_zennit(rule: lrp.Rule) -> zr.BasicHook | zr.Pass:
    if isinstance(rule, BiasFree):
        hook = to_zennit(rule.inner)
        return type(hook)(**{**_zennit_args(rule.inner), "zero_params": "bias"})
    if isinstance(rule, lrp.Zero):
        return zr.Epsilon(epsilon=0.0)
    if isinstance(rule, lrp.Norm):
        return zr.Norm(stabilizer=rule.epsilon)
    if isinstance(rule, lrp.Epsilon):
        eps = Stabilizer(rule.epsilon, norm_scale=True) if rule.relative else rule.epsilon
        return zr.Epsilon(epsilon=eps)
    if isinstance(rule, lrp.Gamma):
        return zr.Gamma(gamma=rule.gamma, stabilizer=rule.stabilizer)
    if isinstance(rule, lrp.AlphaBeta):
        return zr.AlphaBeta(alpha=rule.alpha, beta=rule.beta, stabilizer=rule.stabilizer)
    if isinstance(rule, lrp.ZPlus):
        return zr.ZPlus(stabilizer=rule.stabilizer)
    if isinstance(rule, lrp.ZBox):
        return zr.ZBox(low=rule.low, high=rule.high, stabilizer=rule.stabilizer)
    if isinstance(rule, lrp.Flat):
        return zr.Flat(stabilizer=rule.stabilizer)
    if isinstance(rule, lrp.WSquare):
        return zr.WSquare(stabilizer=rule.stabilizer)
    if isinstance(rule, lrp.Pass):
        return zr.Pass()
    raise TypeError(rule)


def _zennit_args(rule: lrp.Rule) -> dict:
    """The keyword arguments to_zennit gives zennit's rule for `rule` (to add zero_params)."""
    if isinstance(rule, lrp.Zero):
        return {"epsilon": 0.0}
    if isinstance(rule, lrp.Norm):
        raise TypeError("Norm has no bias-free variant")
    if isinstance(rule, lrp.Epsilon):
        return {"epsilon": Stabilizer(rule.epsilon, norm_scale=True) if rule.relative else rule.epsilon}
    if isinstance(rule, lrp.Gamma):
        return {"gamma": rule.gamma, "stabilizer": rule.stabilizer}
    if isinstance(rule, lrp.AlphaBeta):
        return {"alpha": rule.alpha, "beta": rule.beta, "stabilizer": rule.stabilizer}
    if isinstance(rule, lrp.ZBox):
        return {"low": rule.low, "high": rule.high, "stabilizer": rule.stabilizer}
    if isinstance(rule, (lrp.ZPlus, lrp.Flat, lrp.WSquare)):
        return {"stabilizer": rule.stabilizer}
    raise TypeError(rule)


def zennit_relevance(
    model: nn.Module, x: Tensor, r_out: Tensor, rules: dict[str, lrp.Rule], reference: nn.Module | None = None
) -> Tensor:
    """zennit's relevance on the same pre-folded, traced network and the same rule map.

    Activations get Pass, Upsample/AvgPool and zennit Sum modules get Norm: what
    our engine does for them by default. `reference` replaces the traced model
    for zennit when it needs a different but equivalent module structure.
    """
    prepared = lrp.prepare(model)
    gm = prepared.gm if reference is None else reference
    name_map = [((name,), to_zennit(rule)) for name, rule in rules.items()]
    for name, module in gm.named_modules():
        info = prepared.by_name.get(name)
        if isinstance(module, Sum) or (info is not None and info.kind is Kind.NORM):
            name_map.append(((name,), zr.Norm()))
        elif info is not None and info.kind is Kind.PASS and isinstance(module, (nn.ReLU, nn.LeakyReLU)):
            name_map.append(((name,), zr.Pass()))
    with Gradient(model=gm, composite=NameMapComposite(name_map=name_map)) as attributor:
        _, relevance = attributor(x.clone(), r_out)
    return relevance.detach()


def max_rel_diff(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(torch.finfo(b.dtype).tiny))
