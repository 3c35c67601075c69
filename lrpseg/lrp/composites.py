"""Named rule maps. Layers are placed by data flow (graph.Roles), never by
`named_modules()` order.

- montavon (seed 001 Table 1, right): first z^B; shallow encoder gamma(0.25);
  deep encoder, bottleneck and decoder epsilon(0.25 std); head LRP-0.
- ours (seed 001 Table 1, left): first z^B; shallow encoder alpha-beta(2, 1);
  deeper encoder gamma(0.25); decoder and head epsilon(0.25 std).
  "Shallow" is the position among encoder layers in data-flow order:
  montavon's gamma covers the first half, ours' alpha-beta the first 3/8 —
  which reproduces Table 1 exactly on VGG-11 (8 convolutions).
- conserving (the default before conserving-reference): first z^B, every other
  layer z+ without bias (zennit's ZPlus(zero_params='bias')). Biases absorb
  nothing, z+ denominators are sums of positive terms (no sign flips), so a
  median 0.98 of Σ r_out reaches the pixels of the shipped U-Net; the rest is
  the ε of units with no positive input (docs/lrp.md has the measured table).
- conserving-local: every layer bias-free (the first too: z+ instead of z^B),
  alpha-beta(2, 1) in the first 3/8 of the encoder, z+ elsewhere. Conserves
  as well as `conserving` and puts more relevance inside the defect (0.63 vs
  0.50 on 16 held-out images, `ours` 0.56; docs/lrp.md), but not the 0.7 the
  issue asks for, so it is not the default.
- conserving-reference (the default for jobs): `conserving-local` with the first
  layer's z+ taken about each pixel's local background (ReferenceBox: z^B with
  the box [min(x, m), max(x, m)], m the 15 x 15 median) instead of about 0. The
  grey background around a thin defect then gets no relevance: mass inside the
  defect 0.80 (128 px) / 0.73 (160 px) on held-out images against 0.61 / 0.56 for
  `ours`, conserving as `conserving` does (docs/lrp.md).
- epsilon-gamma-box, epsilon-plus-flat: zennit's composites of those names,
  with the first layer taken in data flow.
- epsilon-gamma-reference: epsilon-gamma-box with ReferenceBox on the first
  layer; does not conserve (biases), but its maps give the best masks
  (docs/masks-metrics-render.md).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from lrpseg.lrp.bias_free import BiasFree
from lrpseg.lrp.graph import Kind, NodeInfo
from lrpseg.lrp.reference_box import ReferenceBox
from lrpseg.lrp.rules import AlphaBeta, Epsilon, Flat, Gamma, Rule, ZBox, Zero, ZPlus

Bounds = tuple[float | Tensor, float | Tensor]
Composite = Callable[[NodeInfo, Bounds], Rule]

RELATIVE_EPS = 0.25


def _shallow(info: NodeInfo, fraction: float) -> bool:
    r = info.roles
    return r.encoder_index >= 0 and r.encoder_index < fraction * r.encoder_count


def montavon(info: NodeInfo, bounds: Bounds) -> Rule:
    r = info.roles
    if r.first:
        return ZBox(*bounds)
    if r.head:
        return Zero()
    if _shallow(info, 1 / 2):
        return Gamma(0.25)
    return Epsilon(RELATIVE_EPS, relative=True)


def ours(info: NodeInfo, bounds: Bounds) -> Rule:
    r = info.roles
    if r.first:
        return ZBox(*bounds)
    if r.decoder or r.head:
        return Epsilon(RELATIVE_EPS, relative=True)
    if _shallow(info, 3 / 8):
        return AlphaBeta(2.0, 1.0)
    return Gamma(0.25)


def conserving(info: NodeInfo, bounds: Bounds) -> Rule:
    """z^B on the first layer (its biases cancel), bias-free z+ everywhere else."""
    return ZBox(*bounds) if info.roles.first else BiasFree(ZPlus())


def conserving_local(info: NodeInfo, bounds: Bounds) -> Rule:
    """Bias-free everywhere: z+ on the first layer, alpha-beta(2, 1) in the shallow encoder, z+ elsewhere."""
    r = info.roles
    if not r.first and _shallow(info, 3 / 8):
        return BiasFree(AlphaBeta(2.0, 1.0))
    return BiasFree(ZPlus())


def conserving_reference(info: NodeInfo, bounds: Bounds) -> Rule:
    """`conserving-local` with z^B about each pixel's local median on the first layer (ReferenceBox)."""
    return ReferenceBox() if info.roles.first else conserving_local(info, bounds)


def epsilon_gamma_box(info: NodeInfo, bounds: Bounds) -> Rule:
    if isinstance(info.module, nn.Linear):
        return Epsilon(1e-6)
    return ZBox(*bounds) if info.roles.first else Gamma(0.25)


def epsilon_gamma_reference(info: NodeInfo, bounds: Bounds) -> Rule:
    """`epsilon-gamma-box` with z^B about each pixel's local median on the first layer: the map for masks."""
    if isinstance(info.module, nn.Linear):
        return Epsilon(1e-6)
    return ReferenceBox() if info.roles.first else Gamma(0.25)


def epsilon_plus_flat(info: NodeInfo, bounds: Bounds) -> Rule:
    if info.roles.first:
        return Flat()
    return Epsilon(1e-6) if isinstance(info.module, nn.Linear) else ZPlus()


def epsilon(info: NodeInfo, bounds: Bounds) -> Rule:
    """Plain LRP-epsilon everywhere (a cheap, conservative baseline)."""
    return Epsilon(1e-6)


COMPOSITES: dict[str, Composite] = {
    "conserving-reference": conserving_reference,
    "conserving": conserving,
    "conserving-local": conserving_local,
    "montavon": montavon,
    "ours": ours,
    "epsilon-gamma-box": epsilon_gamma_box,
    "epsilon-gamma-reference": epsilon_gamma_reference,
    "epsilon-plus-flat": epsilon_plus_flat,
    "epsilon": epsilon,
}


def rule_map(name: str, infos: dict, bounds: Bounds) -> dict[str, Rule]:
    """{layer name: rule} for every parametric layer under composite `name`."""
    if name not in COMPOSITES:
        raise KeyError(f"unknown composite {name!r}; known: {', '.join(COMPOSITES)}")
    make = COMPOSITES[name]
    return {info.name: make(info, bounds) for info in infos.values() if info.kind is Kind.PARAM}
