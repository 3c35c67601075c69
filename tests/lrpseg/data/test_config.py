from __future__ import annotations

import json

import pytest

from lrpseg.data import DatasetConfigError, DefectDatasetConfig


def test_round_trip_through_json() -> None:
    config = DefectDatasetConfig(size=64, defect_rate=0.3, noise_std=(0.0, 0.05))
    again = DefectDatasetConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 8}, "size must be in"),
        ({"defect_rate": 1.5}, "defect_rate must be in"),
        ({"crack_share": -0.1}, "crack_share must be in"),
        ({"max_distractors": -1}, "max_distractors"),
        ({"crack_depth": (0.7, 0.3)}, "crack_depth must be a range"),
    ],
)
def test_bad_settings_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(DatasetConfigError, match=message):
        DefectDatasetConfig(**kwargs)


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(DatasetConfigError, match="unknown dataset settings: \\['colour'\\]"):
        DefectDatasetConfig.from_dict({"size": 64, "colour": "red"})
