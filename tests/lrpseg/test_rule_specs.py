"""The wire enums in schemas/params.py name exactly what the library registers (composites, rules)."""

from __future__ import annotations

from typing import get_args

import pytest

from lrpseg import lrp
from lrpseg.lrp.composites import COMPOSITES
from lrpseg.rule_specs import LIBRARY_ONLY, RULES, SERVED_COMPOSITES, make_rule
from schemas.params import Composite, LrpParams, RuleSpec


def wire_rule_names() -> set[str]:
    union = get_args(RuleSpec)[0]
    return {name for model in get_args(union) for name in get_args(model.model_fields["rule"].annotation)}


def test_the_composite_enum_is_the_registry() -> None:
    assert {c.value for c in Composite} == set(SERVED_COMPOSITES)
    assert set(SERVED_COMPOSITES) | LIBRARY_ONLY == set(COMPOSITES)


def test_the_rule_specs_are_the_registry() -> None:
    assert wire_rule_names() == set(RULES)


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_wire_rule_builds_from_its_defaults(name: str) -> None:
    spec = LrpParams.model_validate({"rules": {"layer": {"rule": name}}}).rules
    assert spec is not None
    rule = make_rule(spec["layer"].model_dump(), (0.0, 1.0))
    assert isinstance(rule, lrp.Rule)


def test_z_box_takes_the_input_bounds_unless_given() -> None:
    default = make_rule({"rule": "z-box", "low": None, "high": None}, (-1.0, 2.0))
    given = make_rule({"rule": "z-box", "low": 0.0, "high": 0.5}, (-1.0, 2.0))
    assert isinstance(default, lrp.ZBox) and (default.low, default.high) == (-1.0, 2.0)
    assert isinstance(given, lrp.ZBox) and (given.low, given.high) == (0.0, 0.5)
    with pytest.raises(KeyError, match="unknown rule"):
        make_rule({"rule": "nope"}, (0.0, 1.0))
