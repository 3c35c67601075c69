"""params.send and params.source checked at submission (problem+json naming the field), the
settings checked at start-up, and a job without DICOM output sending nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from schemas.jobs import JobView
from tests.service import factories

SOURCE = {"url": "http://pacs.example.org/dicom-web", "study": "1.2.3", "series": "1.2.3.4"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "dicomweb_allowed_hosts": ["*.example.org"],
            "dicomweb_destination": "https://pacs.example.org/dicom-web",
        }
    )


def post(client: TestClient, params: dict[str, Any], image: bool = True):
    files = None
    if image:
        files = {"image": ("a.png", factories.png_bytes(factories.defect_image(32)[0]), "image/png")}
    return client.post("/v1/jobs", files=files, data={"params": json.dumps(params)})


def problem(response, field: str) -> str:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert [e["field"] for e in body["errors"]] == [field]
    return str(body["detail"])


def test_destinations_and_sources_outside_the_allow_list_are_422(client: TestClient) -> None:
    detail = problem(post(client, {"send": {"dicomweb": "http://evil.test/dicom-web"}}), "params.send.dicomweb")
    assert "not in this server's dicomweb_allowed_hosts" in detail
    detail = problem(post(client, {"send": {"dicomweb": "http://u:p@pacs.example.org/"}}), "params.send.dicomweb")
    assert "credentials" in detail
    detail = problem(post(client, {"send": {"dimse": True}}), "params.send.dimse")
    assert "LRPSEG_DIMSE_DESTINATION" in detail
    wrong = {**SOURCE, "url": "file:///etc/passwd"}
    detail = problem(post(client, {"source": {"dicomweb": wrong}}, image=False), "params.source.dicomweb.url")
    assert "http:// or https://" in detail
    assert "image part" in problem(post(client, {}, image=False), "image")
    assert "not both" in problem(post(client, {"source": {"dicomweb": SOURCE}}), "params.source")
    bad_uid = {**SOURCE, "study": "1.2.x"}
    assert post(client, {"source": {"dicomweb": bad_uid}}, image=False).status_code == 422


def test_dicomweb_is_off_without_an_allow_list(make_client: Callable[[Settings], TestClient]) -> None:
    client = make_client(Settings(redis_url="redis://unused", queue_name="lrpseg-test", key_prefix="lrpseg-test"))
    detail = problem(post(client, {"source": {"dicomweb": SOURCE}}, image=False), "params.source.dicomweb.url")
    assert "DICOMweb is disabled" in detail


def test_a_job_without_dicom_output_sends_nothing(client: TestClient, work: Callable[[], bool]) -> None:
    response = post(client, {"task": "segment"})
    assert response.status_code == 202, response.text
    (pending,) = JobView.model_validate(client.get(response.headers["location"]).json()).deliveries or []
    assert (pending.kind, pending.target, pending.status) == (
        "dicomweb",
        "https://pacs.example.org/dicom-web",
        "pending",
    )
    assert work()
    view = JobView.model_validate(client.get(response.headers["location"]).json())
    assert view.status == "finished"
    assert [(d.status, d.last_error) for d in view.deliveries or []] == [("skipped", "the job made no DICOM output")]
    refused = post(client, {"task": "segment", "send": {"dicomweb": False}})
    assert JobView.model_validate(client.get(refused.headers["location"]).json()).deliveries is None


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"dicomweb_destination": "http://pacs/dicom-web"}, "DICOMweb is disabled"),
        ({"dicomweb_destination": "http://other/dicom-web", "dicomweb_allowed_hosts": "pacs"}, "not in this server"),
        ({"dimse_destination": "ORTHANC@pacs"}, "AET@host:port"),
        ({"dimse_destination": "A\\B@pacs:104"}, "AE title"),
        ({"dimse_destination": "ORTHANC@pacs:70000"}, "1-65535"),
        ({"dicom_send_timeout": 40.0}, "callback_lease must exceed dicom_send_timeout"),
    ],
)
def test_settings_refuse_a_destination_they_cannot_use(update: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(redis_url="redis://unused", **update)
