"""A real Orthanc (tests/orthanc_server.py) sends a study to lrpseg by DICOMweb STOW-RS and by
C-STORE; each series becomes one job (by the API's quiet-period sweeper) that a real RQ worker finishes."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import redis

from core.settings import Settings
from pacs.intake import SeriesIntake
from pacs.receive import Receiver
from pacs.scp import start
from tests.orthanc_server import OrthancServer
from tests.pacs.factories import ct_series, instance_bytes
from tests.pacs.round_trip import HEADERS, KEY, job_of


def study_in(orthanc: OrthancServer, n: int, seed: int) -> tuple[str, str]:
    """n CT slices stored in Orthanc: (Orthanc's study id, the SeriesInstanceUID)."""
    datasets = ct_series(n, seed)
    for data in instance_bytes(datasets):
        orthanc.upload(data)
    with orthanc.client() as http:
        [study] = http.get("/studies").raise_for_status().json()
    return str(study), str(datasets[0].SeriesInstanceUID)


def finished(url: str, work: Callable[[], bool], job_id: str, redis_conn: redis.Redis, depth: int) -> None:
    worked = work()
    view = httpx.get(f"{url}/v1/jobs/{job_id}", headers={"X-API-Key": KEY}, timeout=10).json()
    assert worked, view
    view = httpx.get(f"{url}/v1/jobs/{job_id}", headers={"X-API-Key": KEY}, timeout=10).json()
    assert view["status"] == "finished", view
    assert view["result"]["input"]["depth"] == depth and view["result"]["input"]["format"] == "dicom-series"
    assert len(redis_conn.keys("lrpseg-test:record:*")) == 1  # one series, one job
    assert redis_conn.keys("lrpseg-test:intake-dek:*") == []  # its received data is unreadable now


def test_orthanc_sends_a_study_by_stow_rs(
    orthanc: OrthancServer, lrpseg_url: str, work: Callable[[], bool], redis_conn: redis.Redis
) -> None:
    orthanc.add_dicomweb_server("lrpseg", f"{lrpseg_url}/dicomweb/", {"X-API-Key": KEY})
    study, series_uid = study_in(orthanc, 4, seed=30)
    with orthanc.client() as http:
        http.post("/dicom-web/servers/lrpseg/stow", json={"Resources": [study]}).raise_for_status()
    finished(lrpseg_url, work, job_of(lrpseg_url, series_uid, HEADERS), redis_conn, 4)


def test_orthanc_stow_with_a_wrong_key_stores_nothing(
    orthanc: OrthancServer, lrpseg_url: str, redis_conn: redis.Redis
) -> None:
    orthanc.add_dicomweb_server("lrpseg-bad", f"{lrpseg_url}/dicomweb/", {"X-API-Key": "not-the-key"})
    study, _ = study_in(orthanc, 2, seed=31)
    with orthanc.client() as http:
        answer = http.post("/dicom-web/servers/lrpseg-bad/stow", json={"Resources": [study]})
    assert answer.status_code >= 400  # Orthanc reports lrpseg's 401
    assert redis_conn.keys("lrpseg-test:intake*") == []


def test_orthanc_sends_a_study_by_c_store(
    orthanc: OrthancServer,
    lrpseg_url: str,
    hospital: Settings,
    work: Callable[[], bool],
    redis_conn: redis.Redis,
) -> None:
    server = start(hospital, Receiver(SeriesIntake(redis_conn, hospital)), port=0)
    try:
        orthanc.add_modality("lrpseg", hospital.dimse_ae_title, server.server_address[1])
        study, series_uid = study_in(orthanc, 5, seed=32)
        with orthanc.client() as http:
            http.post("/modalities/lrpseg/echo", content=b"{}").raise_for_status()
            http.post("/modalities/lrpseg/store", content=study.encode()).raise_for_status()
    finally:
        server.shutdown()
    finished(lrpseg_url, work, job_of(lrpseg_url, series_uid, HEADERS), redis_conn, 5)
