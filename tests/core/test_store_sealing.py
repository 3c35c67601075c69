"""Deletion that deletes (issue 15, defect 5): uploads and artifacts are sealed with a per-job key,
DELETE destroys the key, and the patient's name is nowhere in the append-only file of the Redis
that held the job (a private redis-server, AOF with fsync per write, as in production)."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pydicom.data
import pytest
import redis
from fastapi.testclient import TestClient

from core import sealing
from core.settings import Settings
from core.store import Inputs, Store, Upload
from lrpseg.registry import Registry
from service.app import create_app
from tests.redis_server import RedisServer
from workers.worker import build_worker

PATIENT = "Zyxwvut^Quixotic15"  # a name no other byte sequence in the data contains
PATIENT_ID = "PID-Q15-98765"


def dicom_with_patient() -> bytes:
    ds = pydicom.dcmread(Path(pydicom.data.get_testdata_file("CT_small.dcm")))
    ds.PatientName, ds.PatientID = PATIENT, PATIENT_ID
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def persisted_bytes(data_dir: Path) -> bytes:
    """Everything Redis wrote to disk: the AOF segments (and any RDB)."""
    return b"".join(p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.is_file() and p.suffix != ".log")


def test_sealed_blobs_open_only_with_their_job_and_field(redis_conn: redis.Redis) -> None:
    store = Store(redis_conn, "lrpseg-test")
    store.put_inputs("j1", Inputs(Upload(b"pixels", "scan.dcm", "application/dicom"), None), ttl=60)
    raw = redis_conn.hgetall("lrpseg-test:input:j1")
    assert b"pixels" not in b"".join(raw.values()) and b"scan.dcm" not in b"".join(raw.values())
    got = store.get_inputs("j1")
    assert got is not None and got.image == Upload(b"pixels", "scan.dcm", "application/dicom")
    key = store.data_key("j1")
    assert key is not None
    with pytest.raises(sealing.SealError):  # another field's blob does not open here
        sealing.unseal(key, raw[b"image"], "j1", "input/image_name")
    with pytest.raises(sealing.SealError):
        sealing.unseal(key, raw[b"image"], "j2", "input/image")
    store.mark_deleted("j1")
    assert store.get_inputs("j1") is None and store.data_key("j1") is None


def test_the_end_writes_result_is_sealed_and_goes_with_the_job(redis_conn: redis.Redis) -> None:
    store = Store(redis_conn, "lrpseg-test")
    assert store.seal_result("j3", b"{}") is None  # no data key: nothing to seal with
    store.put_inputs("j3", Inputs(Upload(b"pixels", "scan.png", "image/png"), None), ttl=60)
    sealed = store.seal_result("j3", b'{"model": "m"}')
    assert sealed is not None and b"model" not in sealed
    with redis_conn.pipeline() as pipe:
        store.put_result("j3", sealed, 60, pipe)
        pipe.execute()
    assert store.get_result("j3") == b'{"model": "m"}' and 0 < redis_conn.ttl("lrpseg-test:result:j3") <= 60
    store.mark_deleted("j3")
    assert store.get_result("j3") is None and not redis_conn.exists("lrpseg-test:result:j3")


@pytest.mark.slow
@pytest.mark.parametrize(
    "keys_apart", [False, True], ids=["keys-in-the-same-redis", "keys-in-a-redis-without-persistence"]
)
def test_a_deleted_dicom_jobs_patient_name_is_not_in_the_append_only_file(
    tmp_path: Path, registry: Registry, settings: Settings, redis_conn: redis.Redis, keys_apart: bool
) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        conn = redis.Redis.from_url(server.url)
        kwargs = redis_conn.connection_pool.connection_kwargs
        key_url = f"redis://{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
        settings = settings.model_copy(
            update={"redis_url": server.url, "key_redis_url": key_url if keys_apart else None}
        )
        client = TestClient(create_app(settings, registry=registry, connection=conn))
        data = dicom_with_patient()
        response = client.post("/v1/jobs", files={"image": ("ct.dcm", data, "application/dicom")})
        assert response.status_code == 202, response.text
        location = response.headers["location"]
        build_worker(settings, connection=conn, registry=registry, heartbeat=False).work(burst=True)
        assert client.get(location).status_code == 200
        view = client.get(location).json()
        assert view["status"] == "finished", view.get("error")
        names = [a["name"] for a in view["result"]["artifacts"]]
        if "seg.dcm" in names:  # the DICOM artifacts carry the patient module: readable while the job lives
            seg = client.get(f"{location}/artifacts/seg.dcm").content
            assert pydicom.dcmread(io.BytesIO(seg)).PatientName == PATIENT
        job_id = location.rsplit("/", 1)[1]
        key_store = redis_conn if keys_apart else conn
        data_key = key_store.get(f"{settings.key_prefix}:dek:{job_id}")
        assert data_key is not None and len(data_key) == 32
        assert not conn.exists(f"{settings.key_prefix}:dek:{job_id}") or not keys_apart
        assert client.delete(location).status_code == 204
        disk = persisted_bytes(tmp_path / "redis")
        assert disk, "redis wrote no append-only file"
        for secret in (PATIENT.encode(), PATIENT_ID.encode(), b"Quixotic15"):
            assert secret not in disk, f"{secret!r} is still on disk after DELETE"
        assert b"ct.dcm" not in disk  # nor the file name
        assert not key_store.keys(f"{settings.key_prefix}:dek:*")  # the key is gone: what is on disk stays sealed
        if keys_apart:  # and it never touched the data's disk: the sealed copies there cannot be opened
            assert data_key not in disk
    finally:
        server.stop()
