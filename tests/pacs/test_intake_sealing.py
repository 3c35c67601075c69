"""Received series at rest: the patient's name never reaches the disk of the Redis that holds the
instances (a private redis-server, AOF with fsync per write), neither while the series is received
nor after its job ran and was deleted; the intake's key (on a Redis without persistence) is gone."""

from __future__ import annotations

from pathlib import Path

import redis
from fastapi.testclient import TestClient

from core.settings import Settings
from lrpseg.registry import Registry
from service.app import create_app
from tests.core.test_store_sealing import PATIENT, PATIENT_ID, persisted_bytes
from tests.pacs.factories import STOW_TYPE, ct_series, instance_bytes, stow_body
from tests.redis_server import RedisServer
from tests.service.live import redis_url_of
from workers.worker import build_worker


def test_received_series_leaves_no_patient_name_on_disk(
    tmp_path: Path, registry: Registry, settings: Settings, redis_conn: redis.Redis
) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        conn = redis.Redis.from_url(server.url)
        settings = settings.model_copy(update={"redis_url": server.url, "key_redis_url": redis_url_of(redis_conn)})
        client = TestClient(create_app(settings, registry=registry, connection=conn))
        datasets = ct_series(4, seed=40)
        for ds in datasets:
            ds.PatientName, ds.PatientID = PATIENT, PATIENT_ID
        response = client.post(
            "/dicomweb/studies", content=stow_body(instance_bytes(datasets)), headers={"Content-Type": STOW_TYPE}
        )
        assert response.status_code == 200, response.text
        secrets = (PATIENT.encode(), PATIENT_ID.encode(), b"Quixotic15")
        disk = persisted_bytes(tmp_path / "redis")
        assert disk and not any(s in disk for s in secrets)  # sealed while received
        assert len(redis_conn.keys(f"{settings.key_prefix}:intake-dek:*")) == 1  # its key only on the other Redis
        commit = client.post(f"/dicomweb/series/{datasets[0].SeriesInstanceUID}/commit")
        assert commit.status_code == 202, commit.text
        assert redis_conn.keys(f"{settings.key_prefix}:intake-dek:*") == []  # destroyed with the intake
        build_worker(settings, connection=conn, registry=registry, heartbeat=False).work(burst=True)
        location = commit.headers["location"]
        assert client.get(location).json()["status"] == "finished"
        assert client.delete(location).status_code == 204
        disk = persisted_bytes(tmp_path / "redis")
        assert not any(s in disk for s in secrets), "the patient's name reached the disk"
        assert redis_conn.keys(f"{settings.key_prefix}:dek:*") == []
    finally:
        server.stop()


def test_a_series_whose_key_was_lost_ends_failed_not_500(
    registry: Registry, settings: Settings, redis_conn: redis.Redis
) -> None:
    """A key Redis without persistence restarted mid-series: the intake's data key is a new one, so
    its instances cannot be unsealed. The commit answers 410 and the series ends failed, never a 500."""
    client = TestClient(create_app(settings, registry=registry, connection=redis_conn))
    datasets = ct_series(3, seed=41)
    response = client.post(
        "/dicomweb/studies", content=stow_body(instance_bytes(datasets)), headers={"Content-Type": STOW_TYPE}
    )
    assert response.status_code == 200, response.text
    [dek] = redis_conn.keys(f"{settings.key_prefix}:intake-dek:*")
    redis_conn.set(dek, b"\x00" * len(redis_conn.get(dek) or b""))  # another key under the same name
    series = datasets[0].SeriesInstanceUID
    commit = client.post(f"/dicomweb/series/{series}/commit")
    assert commit.status_code == 410, commit.text
    assert commit.headers["content-type"] == "application/problem+json"
    status = client.get(f"/dicomweb/series/{series}").json()
    assert status["state"] == "failed" and status["job_id"] is None, status
