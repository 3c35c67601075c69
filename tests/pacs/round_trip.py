"""The steps of a hospital's round trip through a real Orthanc (tests/orthanc_server.py), shared by
the PACS tests and benchmarks/pacs.py: store a series in Orthanc, have Orthanc send it to lrpseg (its
DICOMweb peer, or C-STORE to `lrpseg dimse`), wait for the series job, run the deliverer thread a
worker runs, and find lrpseg's results back in Orthanc."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pydicom
import redis

from core.settings import Settings
from core.store import Store
from tests.orthanc_server import OrthancServer
from tests.service.pacs_series import encode
from workers import deliverer as deliver

STOW, C_STORE = "stow", "c-store"  # the two ways Orthanc sends a study to lrpseg
KEY = "hospital-secret-0123456789"  # the hospital's API key (its Orthanc peer sends it)
HEADERS = {"X-API-Key": KEY}
PEER = "lrpseg"  # lrpseg's name in Orthanc's DicomWeb servers and DicomModalities


def store_in(orthanc: OrthancServer, datasets: list[pydicom.Dataset]) -> str:
    """The series stored in Orthanc; Orthanc's id of its study."""
    for ds in datasets:
        orthanc.upload(encode(ds))
    with orthanc.client() as http:
        found = http.post(
            "/tools/find", json={"Level": "Study", "Query": {"StudyInstanceUID": str(datasets[0].StudyInstanceUID)}}
        )
        [study] = found.raise_for_status().json()
    return str(study)


def connect(orthanc: OrthancServer, way: str, url: str, headers: dict[str, str], ae_title: str, port: int) -> None:
    """Declares lrpseg in Orthanc: a DICOMweb server at `url` (the API) or a modality (the SCP)."""
    if way == STOW:
        orthanc.add_dicomweb_server(PEER, f"{url}/dicomweb/", headers)
    else:
        orthanc.add_modality(PEER, ae_title, port)


def send(orthanc: OrthancServer, way: str, study: str) -> None:
    """Orthanc sends the study to lrpseg, as a user or an auto-routing rule of Orthanc would."""
    with orthanc.client() as http:
        if way == STOW:
            http.post(f"/dicom-web/servers/{PEER}/stow", json={"Resources": [study]}).raise_for_status()
        else:
            http.post(f"/modalities/{PEER}/store", content=study.encode()).raise_for_status()


def job_of(url: str, series_uid: str, headers: dict[str, str], timeout: float = 60.0) -> str:
    """The id of the job the received series became (its quiet period over, or committed)."""
    deadline = time.monotonic() + timeout
    while True:
        status = httpx.get(f"{url}/dicomweb/series/{series_uid}", headers=headers, timeout=10).json()
        if status.get("state") == "completed":
            return str(status["job_id"])
        assert status.get("state") != "failed" and time.monotonic() < deadline, status
        time.sleep(0.05)


def delivered(url: str, job_id: str, headers: dict[str, str], timeout: float = 60.0) -> dict[str, Any]:
    """The job's view once none of its deliveries is pending."""
    deadline = time.monotonic() + timeout
    while True:
        view: dict[str, Any] = httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers, timeout=10).json()
        if all(d["status"] != "pending" for d in view.get("deliveries") or []) or time.monotonic() > deadline:
            return view
        time.sleep(0.02)


@contextmanager
def deliverer(redis_conn: redis.Redis, settings: Settings) -> Iterator[None]:
    """The deliverer thread a worker process runs, reading results from the worker's store."""
    stop = threading.Event()
    thread = deliver.start_thread(redis_conn, settings, stop, Store(redis_conn, settings.key_prefix))
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=15)
        assert not thread.is_alive()


def lookup(orthanc: OrthancServer, sop_instance_uid: str) -> bytes:
    """The instance Orthanc holds under this SOP Instance UID (exactly one)."""
    with orthanc.client() as http:
        found = http.post("/tools/lookup", content=sop_instance_uid).raise_for_status().json()
    assert len(found) == 1 and found[0]["Type"] == "Instance", found
    return orthanc.instance_file(found[0]["ID"])


def series_in_study(orthanc: OrthancServer, study: str) -> dict[str, list[str]]:
    """Orthanc's series of the study: SeriesInstanceUID -> its instances' SOP Class UIDs."""
    out: dict[str, list[str]] = {}
    with orthanc.client() as http:
        for series in http.get(f"/studies/{study}/series").raise_for_status().json():
            classes = [
                str(http.get(f"/instances/{instance}/metadata/SopClassUid").raise_for_status().text)
                for instance in series["Instances"]
            ]
            out[str(series["MainDicomTags"]["SeriesInstanceUID"])] = classes
    return out


def commit(url: str, series_uid: str, headers: dict[str, str]) -> str:
    """Completes the received series now (POST /dicomweb/series/{uid}/commit); its job id."""
    answer = httpx.post(f"{url}/dicomweb/series/{series_uid}/commit", headers=headers, timeout=30)
    assert answer.status_code in (200, 202), answer.text
    return str(answer.json()["job_id"])
