"""Structured logs: one JSON object per line with request and job ids; a whole job's logs hold no
patient data, no API key, no pixel bytes, no query string."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Callable, Iterator

import pydicom
import pytest
import redis
from fastapi.testclient import TestClient
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from core import logs
from core.security import hash_key, new_key
from core.settings import Settings
from lrpseg.registry import Registry
from tests.service import factories
from workers.worker import build_worker

KEY = new_key()
PATIENT_NAME = "Doe^Janette^Q"
PATIENT_ID = "PID-98765-XZ"
ACCESSION = "ACC-4711-Q"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """logs.configure() on a buffer at DEBUG (everything), undone afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    stream = io.StringIO()
    logs.configure("debug", "json", stream)
    yield stream
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def dicom_with_patient(pixels: bytes, rows: int, columns: int) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.AccessionNumber = PATIENT_NAME, PATIENT_ID, ACCESSION
    ds.PatientBirthDate, ds.Modality = "19610203", "OT"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = pixels
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_a_whole_job_logs_ids_but_no_patient_data_keys_or_pixels(
    captured: io.StringIO,
    make_client: Callable[[Settings], TestClient],
    settings: Settings,
    registry: Registry,
    redis_conn: redis.Redis,
) -> None:
    settings = Settings.model_validate({**settings.model_dump(), "api_keys": f"rig-7:{hash_key(KEY)}"})
    client = make_client(settings)
    image = factories.defect_image(64)[0]
    pixels = image.tobytes()
    data = dicom_with_patient(pixels, 64, 64)
    headers = {"X-API-Key": KEY, "X-Request-ID": "trace-logs-1"}
    files = {"image": (f"{PATIENT_NAME}_{PATIENT_ID}.dcm", data, "application/dicom")}
    response = client.post("/v1/jobs", files=files, data={"params": "{}"}, headers=headers)
    assert response.status_code == 202, response.text
    job_id, location = response.json()["job_id"], response.headers["location"]

    worker = build_worker(settings, connection=redis_conn, registry=registry, heartbeat=False)
    assert worker.work(burst=True, logging_level="DEBUG")
    view = client.get(location + f"?api_key={KEY}&patient={PATIENT_ID}", headers={"X-API-Key": KEY}).json()
    assert view["status"] == "finished" and "seg.dcm" in view["links"]["artifacts"]
    assert client.get(location + "/artifacts/seg.dcm", headers={"X-API-Key": KEY}).status_code == 200
    wrong = new_key()
    assert client.get(location, headers={"X-API-Key": wrong}).status_code == 401

    text = captured.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines and all({"time", "level", "logger", "message", "request_id", "job_id"} <= set(e) for e in lines)

    for secret in (PATIENT_NAME, "Janette", PATIENT_ID, ACCESSION, "19610203", KEY, wrong, KEY[7:27]):
        assert secret not in text, secret
    for offset in (0, 1000, 2048):  # pixel bytes in any usual spelling
        chunk = pixels[offset : offset + 24]
        for spelling in (chunk.hex(), base64.b64encode(chunk).decode(), repr(chunk)[2:-1]):
            assert spelling not in text

    worker_lines = [e for e in lines if e["logger"].startswith(("rq.", "lrpseg.worker"))]
    assert worker_lines and any(e["job_id"] == job_id for e in worker_lines), [e["message"] for e in worker_lines]
    assert all(e["request_id"] == "trace-logs-1" for e in worker_lines if e["job_id"] == job_id)
    access = [e for e in lines if e["logger"] == "lrpseg.access"]
    submitted = next(e for e in access if e["request_id"] == "trace-logs-1")
    assert (submitted["method"], submitted["route"], submitted["status"]) == ("POST", "/v1/jobs", 202)
    assert submitted["principal"] == "rig-7" and submitted["duration_ms"] > 0
    routes = {e["route"] for e in access}
    assert "/v1/jobs/{job_id}" in routes and "/v1/jobs/{job_id}/artifacts/{name}" in routes
    assert not any("?" in e["message"] or job_id in e["route"] for e in access)
    assert any(e["status"] == 401 and e["principal"] == "-" for e in access)


def test_text_format_and_the_access_log_switch(
    captured: io.StringIO, make_client: Callable[[Settings], TestClient], settings: Settings
) -> None:
    stream = io.StringIO()
    logs.configure("info", "text", stream)
    make_client(settings).get("/healthz", headers={"X-Request-ID": "plain-1"})
    line = next(line for line in stream.getvalue().splitlines() if "lrpseg.access" in line)
    assert "[req=plain-1 job=None] GET /healthz 200" in line
    quiet = io.StringIO()
    logs.configure("info", "json", quiet)
    make_client(settings.model_copy(update={"access_log": False})).get("/healthz")
    assert "lrpseg.access" not in quiet.getvalue()


def test_log_format_is_validated() -> None:
    with pytest.raises(ValueError):
        Settings(log_format="xml")
