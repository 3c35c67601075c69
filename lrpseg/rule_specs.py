"""The LRP names the API accepts, bound to code: composites (`SERVED_COMPOSITES`, from the library's
`lrpseg.lrp.composites.COMPOSITES`) and per-layer rules (`RULES`: wire spec -> rule object).

schemas/params.py spells the same names for the wire (it imports nothing from the library);
tests/lrpseg/test_rule_specs.py fails when the two lists differ.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lrpseg import lrp
from lrpseg.lrp.composites import COMPOSITES

Bounds = tuple[float, float]
RuleBuilder = Callable[[dict[str, Any], Bounds], lrp.Rule]

LIBRARY_ONLY = frozenset({"epsilon"})  # plain LRP-epsilon: a baseline for notebooks, not offered by the API
SERVED_COMPOSITES: tuple[str, ...] = tuple(name for name in COMPOSITES if name not in LIBRARY_ONLY)


def _z_box(spec: dict[str, Any], bounds: Bounds) -> lrp.Rule:
    low, high = (spec["low"], spec["high"]) if spec.get("low") is not None else bounds
    return lrp.ZBox(low, high)


RULES: dict[str, RuleBuilder] = {
    "epsilon": lambda spec, _: lrp.Epsilon(spec["epsilon"], relative=spec["relative"]),
    "gamma": lambda spec, _: lrp.Gamma(spec["gamma"]),
    "alpha-beta": lambda spec, _: lrp.AlphaBeta(spec["alpha"], spec["beta"]),
    "z-box": _z_box,
    "z-plus": lambda _spec, _bounds: lrp.ZPlus(),
    "flat": lambda _spec, _bounds: lrp.Flat(),
    "w-square": lambda _spec, _bounds: lrp.WSquare(),
    "zero": lambda _spec, _bounds: lrp.Zero(),
    "norm": lambda _spec, _bounds: lrp.Norm(),
    "pass": lambda _spec, _bounds: lrp.Pass(),
}


def make_rule(spec: dict[str, Any], bounds: Bounds) -> lrp.Rule:
    """The rule a wire spec ({"rule": name, ...its fields}) asks for; `bounds` are z-box's defaults."""
    name = spec["rule"]
    if name not in RULES:
        raise KeyError(f"unknown rule {name!r}; known: {', '.join(RULES)}")
    return RULES[name](spec, bounds)
