from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from schemas.params import Artifact, Extractor, JobParams, Visualisation


def errors_of(raw: dict) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        JobParams.model_validate_json(json.dumps(raw))
    return [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in info.value.errors()]


def test_empty_object_gives_the_documented_defaults() -> None:
    params = JobParams.model_validate_json("{}")
    assert params.task == "explain" and params.method == "lrp" and params.lrp.composite == "conserving-reference"
    assert params.masks == [Extractor.simple, Extractor.gmm, Extractor.bmm, Extractor.component]
    assert params.target.kind == "class" and params.target.cls is None
    assert all(params.wants(a) for a in Artifact)


def test_unknown_fields_are_rejected_by_name() -> None:
    assert errors_of({"mask": ["gmm"]})[0][0] == "mask"
    assert errors_of({"target": {"kind": "class", "klass": 1}})[0][0] == "target.klass"


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ({"masks": ["otsu"]}, "masks.0"),
        ({"masks": ["gmm", "gmm"]}, ""),
        ({"method": "grad-cam"}, "method"),
        ({"lrp": {"composite": "zennit"}}, "lrp.composite"),
        ({"lrp": {"rules": {"head": {"rule": "alpha-beta", "alpha": 2, "beta": 2}}}}, "lrp.rules.head.alpha-beta"),
        ({"lrp": {"rules": {"head": {"rule": "z-box", "low": 1}}}}, "lrp.rules.head.z-box"),
        ({"lrp": {"rules": {"head": {"rule": "magic"}}}}, "lrp.rules.head"),
        ({"target": {"kind": "region"}}, "target"),
        ({"target": {"kind": "class", "region": [{"x0": 0, "y0": 0, "x1": 2, "y1": 2}]}}, "target"),
        ({"target": {"kind": "region", "cls": 1, "region": [{"x0": 5, "y0": 0, "x1": 2, "y1": 2}]}}, "target.region.0"),
        ({"target": {"cls": -1}}, "target"),
        ({"visualisation": {"threshold": 2, "threshold_mode": "fraction"}}, "visualisation"),
        ({"artifacts": ["mask-bmm.png"], "masks": ["gmm"]}, ""),
        ({"artifacts": ["heatmap.png"]}, "artifacts.0"),
        ({"method": "seg-grad-cam", "lrp": {"composite": "montavon"}}, ""),
        ({"cam_layer": "encoders.1"}, ""),
        ({"frame": -1}, "frame"),
    ],
)
def test_invalid_params_name_the_field(raw: dict, where: str) -> None:
    fields = [f for f, _ in errors_of(raw)]
    assert where in fields, fields


def test_per_layer_rules_and_region_targets_parse() -> None:
    params = JobParams.model_validate_json(
        json.dumps(
            {
                "lrp": {
                    "composite": "montavon",
                    "rules": {"head": {"rule": "epsilon", "epsilon": 0.1}, "x": {"rule": "flat"}},
                },
                "target": {
                    "kind": "region-normalized",
                    "cls": "defect",
                    "region": [{"x0": 1, "y0": 2, "x1": 3, "y1": 4}],
                },
                "masks": ["bmm"],
                "artifacts": ["mask-bmm.png", "relevance.npy"],
            }
        )
    )
    assert params.lrp.rules is not None and params.lrp.rules["head"].epsilon == 0.1
    assert params.target.cls == "defect"
    assert params.wants("relevance.npy") and not params.wants(Artifact.overlay)


def test_round_trip_through_json_is_lossless() -> None:
    params = JobParams(masks=[Extractor.gmm], resize=True)
    assert JobParams.model_validate(params.model_dump(mode="json")) == params


def test_openapi_schema_documents_examples() -> None:
    schema = JobParams.model_json_schema()
    assert schema["additionalProperties"] is False
    assert schema["examples"][0] == {}
    for example in schema["examples"]:
        JobParams.model_validate(example)


def test_visualisation_defaults_to_the_relevance_mass_rule() -> None:
    assert (Visualisation().threshold_mode, Visualisation().threshold) == ("mass", 0.9)
    mode = Visualisation.model_validate({"threshold_mode": "percentile"})
    assert mode.threshold == 50.0  # the mode's own default, not 0.9
    assert Visualisation.model_validate({"threshold_mode": "fraction"}).threshold == 0.05
    old = Visualisation.model_validate({"threshold": 90})  # a request written before mass was the default
    assert (old.threshold_mode, old.threshold) == ("percentile", 90)
    with pytest.raises(ValidationError, match="mass threshold must be <= 1"):
        Visualisation.model_validate({"threshold": 2, "threshold_mode": "mass"})
