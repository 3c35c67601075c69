"""Routing a series to a model: the request's model, else the first matching rule (globs, any case)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.settings import DicomRoute, Settings
from pacs.instances import PROCESSING_FAILURE, InstanceRefused
from pacs.routes import route_model

ROUTES = [
    DicomRoute(match={"Modality": "CT", "BodyPartExamined": "CHEST*"}, model="lung@1"),
    DicomRoute(match={"Modality": "CT"}, model="ct@1"),
    DicomRoute(match={"SeriesDescription": "*t2*"}, model="mr-t2@2"),
]


@pytest.mark.parametrize(
    ("attributes", "model"),
    [
        ({"Modality": "CT", "BodyPartExamined": "CHEST"}, "lung@1"),
        ({"Modality": "ct", "BodyPartExamined": "chest_abdomen"}, "lung@1"),
        ({"Modality": "CT", "BodyPartExamined": "HEAD"}, "ct@1"),  # first match wins, in order
        ({"Modality": "MR", "SeriesDescription": "Ax T2 FLAIR"}, "mr-t2@2"),
    ],
)
def test_first_matching_rule_wins(attributes: dict[str, str], model: str) -> None:
    assert route_model(ROUTES, attributes) == model


def test_request_beats_rules_and_no_match_is_refused() -> None:
    assert route_model(ROUTES, {"Modality": "CT"}, "chosen@3") == "chosen@3"
    with pytest.raises(InstanceRefused) as caught:
        route_model(ROUTES, {"Modality": "US", "BodyPartExamined": "ABDOMEN"})
    assert caught.value.reason == PROCESSING_FAILURE and "Modality=US" in caught.value.detail
    assert route_model([*ROUTES, DicomRoute(model="default@1")], {"Modality": "US"}) == "default@1"


def test_routes_and_ae_titles_are_checked_at_settings_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LRPSEG_DICOM_ROUTES", '[{"match": {"Modality": "CT"}, "model": "ct@1"}, {"model": "d@1"}]')
    monkeypatch.setenv("LRPSEG_DIMSE_ALLOWED_AES", "ORTHANC, DCM4CHEE")
    loaded = Settings()
    assert [r.model for r in loaded.dicom_routes] == ["ct@1", "d@1"]
    assert loaded.dimse_owners() == {"ORTHANC": "anonymous", "DCM4CHEE": "anonymous"}
    for bad in ('[{"match": {"PatientID": "1"}, "model": "m@1"}]', '[{"match": {}, "model": ""}]', "[{", '[{"x": 1}]'):
        monkeypatch.setenv("LRPSEG_DICOM_ROUTES", bad)
        with pytest.raises(ValidationError):
            Settings()
    monkeypatch.delenv("LRPSEG_DICOM_ROUTES")
    for bad in ("A" * 17, "ORTHANC,ORTHANC", "ORTHANC="):
        with pytest.raises(ValidationError):
            Settings(dimse_allowed_aes=bad)  # type: ignore[arg-type]
    # with API keys every AE names the key whose jobs its series become
    keys = "hospital:" + "0" * 64
    with pytest.raises(ValidationError, match="AE=key-name"):
        Settings(api_keys=keys, dimse_allowed_aes="ORTHANC")  # type: ignore[arg-type]
    assert Settings(api_keys=keys, dimse_allowed_aes="ORTHANC=hospital").dimse_owners() == {  # type: ignore[arg-type]
        "ORTHANC": "hospital"
    }
