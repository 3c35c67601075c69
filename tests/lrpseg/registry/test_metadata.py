"""config.json's clinical metadata: parsed, checked, shipped, listed."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from lrpseg.registry import RegistryError, default_registry, read_model_info
from lrpseg.registry.metadata import DEFAULT_SEGMENT, Code, InputWindow

CODES = {
    "category": {"scheme": "SCT", "value": "260787004", "meaning": "Physical object"},
    "type": {"scheme": "99LRPSEG", "value": "SURFDEF", "meaning": "Surface defect"},
}


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    shipped = default_registry().get("unet-defects@1").path
    target = tmp_path / "m@1"
    shutil.copytree(shipped, target)
    return target


def rewrite(directory: Path, **changes: Any) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


def test_shipped_models_declare_surface_domain_and_defect_codes() -> None:
    for info in default_registry().list():
        meta = info.metadata
        assert meta.domain is not None and meta.domain.modalities == ("OT", "XC")
        assert "surface" in meta.domain.description and meta.intended_use
        coding = meta.coding("defect")
        assert coding.category == Code("SCT", "260787004", "Physical object")
        assert coding.type == Code("99LRPSEG", "SURFDEF", "Surface defect")
        assert info.to_dict()["domain"]["modalities"] == ["OT", "XC"]


def test_defaults_without_metadata(model_dir: Path) -> None:
    rewrite(model_dir, domain=None, segment_codes=None, intended_use=None)
    meta = read_model_info(model_dir).metadata
    assert meta.domain is None and meta.intended_use == "" and meta.input_window is None
    assert meta.coding("defect") is DEFAULT_SEGMENT and DEFAULT_SEGMENT.type.meaning == "Lesion"


def test_window_is_read(model_dir: Path) -> None:
    rewrite(model_dir, input_window={"center": 40, "width": 400})
    window = read_model_info(model_dir).metadata.input_window
    assert window == InputWindow(40.0, 400.0) and (window.low, window.high) == (-160.0, 240.0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"domain": {"modalities": []}}, "domain must be"),
        ({"domain": {"modalities": ["ct"]}}, "DICOM Modality values"),
        ({"domain": {"modalities": ["CT"], "colour": 1}}, "unknown keys"),
        ({"segment_codes": {"crack": CODES}}, "does not have"),
        ({"segment_codes": {"defect": {"type": CODES["type"]}}}, "category"),
        ({"segment_codes": {"defect": {**CODES, "type": {"scheme": "SCT", "value": "1"}}}}, "scheme"),
        ({"segment_codes": {"defect": {**CODES, "type": {**CODES["type"], "meaning": ""}}}}, "meaning"),
        ({"input_window": {"center": 0, "width": 0}}, "input_window"),
        ({"intended_use": 3}, "intended_use"),
    ],
)
def test_bad_metadata_is_refused_naming_the_key(model_dir: Path, changes: dict, message: str) -> None:
    rewrite(model_dir, **copy.deepcopy(changes))
    with pytest.raises(RegistryError, match=message):
        read_model_info(model_dir)


def test_spatial_dims_is_checked(model_dir: Path) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    rewrite(model_dir, architecture={**config["architecture"], "spatial_dims": 4})
    with pytest.raises(RegistryError, match="spatial_dims"):
        read_model_info(model_dir)
