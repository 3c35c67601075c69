"""STOW-RS into series jobs through real HTTP (the app), real Redis, real DICOM and a real RQ worker."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from core.security import hash_key
from core.settings import DicomRoute, Settings
from lrpseg.registry import Registry
from pacs.instances import CANNOT_UNDERSTAND, DOES_NOT_MATCH_SOP_CLASS, OUT_OF_RESOURCES, PROCESSING_FAILURE
from schemas.jobs import JobView
from tests.pacs.factories import STOW_TYPE, ct_series, instance_bytes, intake_settings, stow_body
from tests.service import factories

REFERENCED, FAILED, REASON, SOP_INSTANCE = "00081199", "00081198", "00081197", "00081155"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return factories.write_clinical_models(tmp_path_factory.mktemp("clinical"))


@pytest.fixture
def settings() -> Settings:
    return intake_settings()


def stow(client: TestClient, parts: list[Any], path: str = "/dicomweb/studies", **kwargs: Any) -> Any:
    headers = {"Content-Type": STOW_TYPE, **kwargs.pop("headers", {})}
    return client.post(path, content=stow_body(parts), headers=headers, **kwargs)


def uids(body: dict[str, Any], tag: str) -> list[str | None]:
    return [item.get(SOP_INSTANCE, {}).get("Value", [None])[0] for item in body.get(tag, {}).get("Value", [])]


def reasons(body: dict[str, Any]) -> list[int]:
    return [item[REASON]["Value"][0] for item in body[FAILED]["Value"]]


def finished(client: TestClient, work: Callable[[], bool], job_id: str) -> JobView:
    assert work()
    view = JobView.model_validate(client.get(f"/v1/jobs/{job_id}").json())
    assert view.status == "finished", view.error
    return view


def test_stow_then_commit_makes_one_job_a_worker_finishes(
    client: TestClient, work: Callable[[], bool], redis_conn: redis.Redis
) -> None:
    datasets = ct_series(4)
    files = instance_bytes(datasets)
    response = stow(client, files[:3])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom+json"
    assert uids(response.json(), REFERENCED) == [ds.SOPInstanceUID for ds in datasets[:3]]
    series_uid = datasets[0].SeriesInstanceUID
    assert f"/dicomweb/series/{series_uid}" in response.headers["link"]
    # the last instance and two repeated ones: repeats are stored already (idempotent), not counted twice
    response = stow(client, [files[3], files[0], files[1]], path=f"/dicomweb/studies/{datasets[0].StudyInstanceUID}")
    assert response.status_code == 200 and FAILED not in response.json()
    status = client.get(f"/dicomweb/series/{series_uid}").json()
    assert (status["state"], status["instances"], status["model"]) == ("receiving", 4, factories.VOLUME)
    # patient data rests sealed: no instance bytes in Redis in the clear
    sealed = b"".join(redis_conn.hvals(f"lrpseg-test:intake-data:{_intake_id(series_uid)}"))
    assert len(sealed) > sum(map(len, files)) and datasets[0].PatientName.encode() not in sealed
    commit = client.post(f"/dicomweb/series/{series_uid}/commit")
    assert commit.status_code == 202, commit.text
    job_id = commit.json()["job_id"]
    assert commit.headers["location"].endswith(f"/v1/jobs/{job_id}")
    again = client.post(f"/dicomweb/series/{series_uid}/commit")
    assert again.status_code == 200 and again.json()["job_id"] == job_id
    view = finished(client, work, job_id)
    assert (view.result.input.format, view.result.input.depth, view.result.input.modality) == ("dicom-series", 4, "CT")
    status = client.get(f"/dicomweb/series/{series_uid}").json()
    assert (status["state"], status["job_id"], status["job_status"]) == ("completed", job_id, "finished")
    # the intake and its data key are gone; exactly one job exists
    leftovers = {k.decode() for k in redis_conn.keys("lrpseg-test:intake*")}
    assert leftovers == {f"lrpseg-test:intake-result:{_intake_id(series_uid)}"}
    assert len(redis_conn.keys("lrpseg-test:record:*")) == 1


def _intake_id(series_uid: str, owner: str = "anonymous") -> str:
    from pacs.intake import intake_id

    return intake_id(owner, series_uid)


def test_quiet_series_becomes_one_job_by_the_sweeper_after_a_restart(
    make_client: Callable[[Settings], TestClient], settings: Settings, work: Callable[[], bool], redis_conn: redis.Redis
) -> None:
    datasets = ct_series(4, seed=1)
    series_uid = datasets[0].SeriesInstanceUID
    down = make_client(settings)  # no lifespan: an API whose sweeper is not running (stopped, restarting)
    assert stow(down, instance_bytes(datasets)).status_code == 200
    time.sleep(2 * settings.series_quiet_seconds)
    assert down.get(f"/dicomweb/series/{series_uid}").json()["state"] == "receiving"  # waits in Redis
    with make_client(settings) as client:  # an API (re)started: its lifespan runs the sweeper
        deadline = time.monotonic() + 30
        while (status := client.get(f"/dicomweb/series/{series_uid}").json())["state"] != "completed":
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        time.sleep(5 * settings.series_sweep_interval)  # further sweeps make nothing more
        assert len(redis_conn.keys("lrpseg-test:record:*")) == 1
        view = finished(client, work, status["job_id"])
    assert view.result.input.depth == 4


def test_junk_and_non_dicom_parts_fail_alone(client: TestClient) -> None:
    datasets = ct_series(2, seed=2)
    good = instance_bytes(datasets)
    no_series = datasets[1]
    del no_series.SeriesInstanceUID
    parts: list[Any] = [
        good[0],
        b"\0" * 300,  # no DICM prefix
        b"\0" * 128 + b"DICM" + b"\xff" * 64,  # a prefix, then garbage: no UIDs in it
        (b'{"00100010": {}}', "application/dicom+json"),
        instance_bytes([no_series])[0],
    ]
    response = stow(client, parts)
    assert response.status_code == 202, response.text
    body = response.json()
    assert uids(body, REFERENCED) == [datasets[0].SOPInstanceUID]
    assert reasons(body) == [CANNOT_UNDERSTAND, DOES_NOT_MATCH_SOP_CLASS, CANNOT_UNDERSTAND, DOES_NOT_MATCH_SOP_CLASS]
    assert uids(body, FAILED)[3] == no_series.SOPInstanceUID
    # nothing stored at all: 409 with the reasons
    response = stow(client, [b"junk", b"more junk"])
    assert response.status_code == 409 and reasons(response.json()) == [CANNOT_UNDERSTAND] * 2
    # an instance of another study than the URL names
    response = stow(client, [good[1]], path="/dicomweb/studies/1.2.3.4")
    assert response.status_code == 409 and reasons(response.json()) == [DOES_NOT_MATCH_SOP_CLASS]


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/dicom", 415),
        ("multipart/form-data; boundary=x", 415),
        ('multipart/related; type="application/dicom+xml"; boundary=x', 415),
        ('multipart/related; type="application/dicom"', 400),  # no boundary
    ],
)
def test_wrong_content_type_is_a_problem(client: TestClient, content_type: str, status: int) -> None:
    response = client.post("/dicomweb/studies", content=b"x", headers={"Content-Type": content_type})
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_malformed_multipart_is_400(client: TestClient) -> None:
    body = stow_body([instance_bytes(ct_series(1))[0]])
    for broken in (body[:-20], b"no boundary here at all"):
        response = client.post("/dicomweb/studies", content=broken, headers={"Content-Type": STOW_TYPE})
        assert response.status_code == 400, response.text
        assert response.json()["type"].endswith("/malformed-multipart")


def test_routing_model_query_and_no_route(
    make_client: Callable[[Settings], TestClient], settings: Settings, work: Callable[[], bool]
) -> None:
    client = make_client(settings.model_copy(update={"dicom_routes": []}))
    files = instance_bytes(ct_series(2, seed=3))
    response = stow(client, files)
    assert response.status_code == 409 and reasons(response.json()) == [PROCESSING_FAILURE] * 2
    assert "no model for this series" in response.json()[FAILED]["Value"][0]["00000902"]["Value"][0]
    response = stow(client, files, params={"model": "nonexistent@9"})
    assert response.status_code == 409 and reasons(response.json()) == [PROCESSING_FAILURE] * 2
    response = stow(client, files, params={"model": factories.VOLUME})
    assert response.status_code == 200
    # the series is being received for the 3-D model: another model for it is refused
    response = stow(client, files[:1], params={"model": factories.SURFACE})
    assert response.status_code == 409 and reasons(response.json()) == [PROCESSING_FAILURE]


def test_unknown_route_models_are_named_at_start(
    make_client: Callable[[Settings], TestClient], settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    routes = [DicomRoute(match={"Modality": "CT"}, model="lung@9"), *settings.dicom_routes]
    make_client(settings.model_copy(update={"dicom_routes": routes}))
    assert "the registry does not hold: lung@9" in caplog.text


def test_series_limits(make_client: Callable[[Settings], TestClient], settings: Settings) -> None:
    client = make_client(settings.model_copy(update={"series_max_instances": 2}))
    files = instance_bytes(ct_series(3, seed=4))
    response = stow(client, files)
    assert response.status_code == 202 and reasons(response.json()) == [OUT_OF_RESOURCES]
    client = make_client(settings.model_copy(update={"series_max_bytes": len(files[0]) + 10}))
    files = instance_bytes(ct_series(2, seed=5))
    response = stow(client, files)
    assert response.status_code == 202 and reasons(response.json()) == [OUT_OF_RESOURCES]


def test_stow_is_authenticated_like_v1(make_client: Callable[[Settings], TestClient], settings: Settings) -> None:
    keys = f"alice:{hash_key('alice-secret-0123456789')},bob:{hash_key('bob-secret-0123456789')}"
    client = make_client(settings.model_copy(update={"api_keys": keys}))
    files = instance_bytes(ct_series(2, seed=6))
    for headers in ({}, {"X-API-Key": "wrong"}):
        response = stow(client, files, headers=headers)
        assert response.status_code == 401 and response.headers["content-type"] == "application/problem+json"
    response = stow(client, files, headers={"Authorization": "Bearer alice-secret-0123456789"})
    assert response.status_code == 200
    series_uid = ct_series(1)[0].SeriesInstanceUID
    assert (
        client.get(f"/dicomweb/series/{series_uid}", headers={"X-API-Key": "alice-secret-0123456789"}).status_code
        == 404
    )
    series_uid = _series_of(files[0])
    alice = client.get(f"/dicomweb/series/{series_uid}", headers={"X-API-Key": "alice-secret-0123456789"})
    assert alice.status_code == 200 and alice.json()["instances"] == 2
    # per-key isolation: bob neither sees nor commits alice's series
    bob = {"X-API-Key": "bob-secret-0123456789"}
    assert client.get(f"/dicomweb/series/{series_uid}", headers=bob).status_code == 404
    assert client.post(f"/dicomweb/series/{series_uid}/commit", headers=bob).status_code == 404


def _series_of(data: bytes) -> str:
    from pacs.instances import read_header

    return read_header(data).series


def test_rate_limited_like_v1(make_client: Callable[[Settings], TestClient], settings: Settings) -> None:
    client = make_client(settings.model_copy(update={"rate_limit": 0.001, "rate_burst": 1}))
    files = instance_bytes(ct_series(1, seed=7))
    assert stow(client, files).status_code == 200
    response = stow(client, files)
    assert response.status_code == 429 and "retry-after" in response.headers


def test_body_limit_applies(make_client: Callable[[Settings], TestClient], settings: Settings) -> None:
    client = make_client(settings.model_copy(update={"max_upload_bytes": 10_000}))
    response = stow(client, instance_bytes(ct_series(1, seed=8)) * 40)
    assert response.status_code == 413
