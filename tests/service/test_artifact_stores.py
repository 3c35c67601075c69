"""Real jobs through the app and a real RQ worker with the artifacts in a folder and in S3
(moto's S3 server): GET returns what the worker stored there, Redis holds none of it, the
batch archive streams from the store, DELETE and expiry remove the objects."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from core.artifacts import parse_location
from core.settings import Settings
from lrpseg.registry import Registry
from tests.object_store import S3Server
from tests.service import factories
from tests.service.test_jobs import submit
from workers.worker import build_worker


@pytest.fixture(params=["file", "s3"])
def settings(request: pytest.FixtureRequest, settings: Settings, tmp_path: Path) -> Settings:
    if request.param == "file":
        location = (tmp_path / "shared-volume").as_uri()
    else:
        location = f"s3://{request.getfixturevalue('s3_bucket')}/deploy-a"
    return settings.model_copy(update={"artifact_store": location, "batch_max": 1})


def stored_objects(settings: Settings, request: pytest.FixtureRequest) -> dict[str, bytes]:
    """Every artifact in the store, read without the service: path under the store -> bytes."""
    where = parse_location(settings.artifact_store)
    if where.kind == "file":
        assert where.path is not None
        return {str(p.relative_to(where.path)): p.read_bytes() for p in where.path.rglob("*") if p.is_file()}
    s3: S3Server = request.getfixturevalue("s3_server")
    client = s3.client()
    return {
        key.removeprefix(f"{where.prefix}/"): client.get_object(Bucket=where.bucket, Key=key)["Body"].read()
        for key in s3.keys(where.bucket)
    }


def test_a_job_stores_its_artifacts_outside_redis(
    client: TestClient,
    work: Callable[[], bool],
    settings: Settings,
    redis_conn: redis.Redis,
    request: pytest.FixtureRequest,
) -> None:
    response = submit(client, factories.png_bytes(factories.defect_image(64)[0]), {})
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    assert work()
    view = client.get(f"/v1/jobs/{job_id}").json()
    assert view["status"] == "finished"
    names = sorted(view["links"]["artifacts"])
    objects = stored_objects(settings, request)
    assert sorted(objects) == [f"lrpseg-test/{job_id}/{name}" for name in names]
    for name, url in view["links"]["artifacts"].items():
        got = client.get(url)
        assert got.status_code == 200 and got.content == objects[f"lrpseg-test/{job_id}/{name}"]
        assert int(got.headers["content-length"]) == len(got.content)
    assert not redis_conn.exists(f"lrpseg-test:artifacts:{job_id}")  # Redis: job state and the result only
    assert redis_conn.zscore("lrpseg-test:artifact-deadlines", job_id) == pytest.approx(
        time.time() + settings.result_ttl, abs=60
    )

    assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert stored_objects(settings, request) == {}
    assert client.get(f"/v1/jobs/{job_id}/artifacts/{names[0]}").status_code == 410


def test_expired_artifacts_are_deleted_by_the_workers_maintenance(
    client: TestClient,
    work: Callable[[], bool],
    settings: Settings,
    redis_conn: redis.Redis,
    registry: Registry,
    request: pytest.FixtureRequest,
) -> None:
    kept, due = (submit(client, factories.png_bytes(factories.defect_image(64)[0]), {}).json() for _ in range(2))
    assert work()
    redis_conn.zadd("lrpseg-test:artifact-deadlines", {due["job_id"]: time.time() - 1})  # its TTL has passed
    build_worker(settings, connection=redis_conn, registry=registry, heartbeat=False).clean_registries()
    left = {path.split("/")[1] for path in stored_objects(settings, request)}
    assert left == {kept["job_id"]}


def test_the_batch_archive_streams_from_the_store(client: TestClient, work: Callable[[], bool]) -> None:
    files = [
        ("images", (f"{n}.png", factories.png_bytes(factories.defect_image(64, seed=i)[0]), "image/png"))
        for i, n in enumerate("ab")
    ]
    accepted = client.post("/v1/batches", files=files, data={"params": "{}"}).json()
    assert work()
    got = client.get(accepted["links"]["archive"])
    assert got.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(got.content))
    assert archive.testzip() is None  # every member's CRC checks out
    for item in accepted["items"]:
        folder = f"{item['index']:04d}-{item['name'][:-4]}"
        result = json.loads(archive.read(f"{folder}/result.json"))
        for artifact in result["artifacts"]:
            assert archive.read(f"{folder}/{artifact['name']}") == client.get(artifact["url"]).content


def test_artifact_gets_can_redirect_to_a_presigned_url(
    make_client: Callable[[Settings], TestClient], work: Callable[[], bool], settings: Settings
) -> None:
    if not settings.artifact_store.startswith("s3://"):
        pytest.skip("presigned URLs are an S3 feature (a file store refuses the setting: tests/core)")
    client = make_client(settings.model_copy(update={"artifact_redirect": True}))
    job_id = submit(client, factories.png_bytes(factories.defect_image(64)[0]), {}).json()["job_id"]
    assert client.get(f"/v1/jobs/{job_id}/artifacts/overlay.png", follow_redirects=False).status_code == 409
    assert work()
    moved = client.get(f"/v1/jobs/{job_id}/artifacts/overlay.png", follow_redirects=False)
    assert moved.status_code == 307 and "Signature" in moved.headers["location"]
    fetched = httpx.get(moved.headers["location"])  # straight from the object store, no API key
    assert fetched.status_code == 200 and fetched.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert fetched.headers["content-type"] == "image/png"
