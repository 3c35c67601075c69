"""The artifact stores (redis, file, s3) behind one interface, against real servers: the test
Redis, a folder, and moto's S3 server (a real S3-protocol endpoint over HTTP)."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest
import redis

from core.artifacts import FileArtifacts, RedisArtifacts, S3Artifacts, open_artifacts, parse_location
from core.settings import Settings
from core.store import Store
from tests.object_store import S3Server
from tests.service import factories

BLOBS = {"overlay.png": b"\x89PNG" + bytes(range(256)) * 8, "relevance.npy": b"\x93NUMPY" + b"\0" * 5000}


@pytest.fixture
def redis_conn() -> redis.Redis:
    connection = factories.connect_test_redis()
    connection.flushdb()
    return connection


@pytest.fixture(params=["redis", "file", "s3"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        return "redis"
    if request.param == "file":
        return (tmp_path / "artifacts").as_uri()
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/deploy-a"


@pytest.mark.parametrize(
    ("value", "kind"),
    [("redis", "redis"), ("file:///srv/lrpseg", "file"), ("s3://bucket", "s3"), ("s3://bucket/a/b/", "s3")],
)
def test_locations(value: str, kind: str) -> None:
    where = parse_location(value)
    assert where.kind == kind
    assert Settings(artifact_store=value).artifact_store == value
    if value == "s3://bucket/a/b/":
        assert (where.bucket, where.prefix) == ("bucket", "a/b")


@pytest.mark.parametrize("value", ["s3://", "file://relative", "file://host/x", "ftp://x", "memory", "s3://b?x=1"])
def test_bad_locations_are_refused_at_start(value: str) -> None:
    with pytest.raises(ValueError, match="artifact store"):
        Settings(artifact_store=value)


def test_redirects_need_a_store_with_urls(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="artifact_redirect needs an s3"):
        Settings(artifact_store=tmp_path.as_uri(), artifact_redirect=True)
    assert Settings(artifact_store="s3://b", artifact_redirect=True).artifact_redirect


def test_each_store_keeps_streams_and_deletes(store_location: str, redis_conn: redis.Redis) -> None:
    artifacts = open_artifacts(store_location, redis_conn, "lrpseg-test")
    kind = parse_location(store_location).kind
    assert isinstance(artifacts, {"redis": RedisArtifacts, "file": FileArtifacts, "s3": S3Artifacts}[kind])
    artifacts.put("job-1", BLOBS, ttl=60)
    artifacts.put("job-2", {"overlay.png": b"other"}, ttl=60)
    assert artifacts.names("job-1") == sorted(BLOBS)
    for name, data in BLOBS.items():
        assert artifacts.get("job-1", name) == data
        blob = artifacts.stream("job-1", name)
        assert blob is not None and blob.size == len(data) and b"".join(blob.chunks) == data
    assert artifacts.get("job-1", "mask.png") is None and artifacts.stream("job-1", "mask.png") is None
    assert artifacts.get("nope", "overlay.png") is None and artifacts.names("nope") == []
    artifacts.delete("job-1")
    assert artifacts.names("job-1") == [] and artifacts.get("job-1", "overlay.png") is None
    assert artifacts.get("job-2", "overlay.png") == b"other"  # only that job's
    # Redis holds artifacts only when it is the store
    assert bool(redis_conn.exists("lrpseg-test:artifacts:job-2")) == (kind == "redis")


def test_s3_objects_sit_under_the_prefix_and_presigned_urls_work(s3_server: S3Server, s3_bucket: str) -> None:
    artifacts = S3Artifacts(s3_bucket, "deploy-a/lrpseg-test")
    artifacts.put("job-1", BLOBS, ttl=60)
    assert s3_server.keys(s3_bucket) == [f"deploy-a/lrpseg-test/job-1/{name}" for name in sorted(BLOBS)]
    url = artifacts.url("job-1", "overlay.png", expires=60, content_type="image/png")
    assert url is not None and url.startswith(s3_server.url) and "Signature" in url
    with urllib.request.urlopen(url, timeout=10) as response:  # no credentials: the URL is the key
        assert response.read() == BLOBS["overlay.png"]
        assert response.headers["Content-Type"] == "image/png"
        assert 'filename="job-1-overlay.png"' in response.headers["Content-Disposition"]
    unsigned = url.split("?", 1)[0]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(unsigned, timeout=10)
    assert refused.value.code == 403


def test_the_sweeper_deletes_what_is_due_and_only_that(store_location: str, redis_conn: redis.Redis) -> None:
    store = Store(redis_conn, "lrpseg-test", open_artifacts(store_location, redis_conn, "lrpseg-test"))
    store.put_artifacts("old", BLOBS, ttl=10)
    store.put_artifacts("new", BLOBS, ttl=1000)
    if store.artifacts.expires_by_itself:  # Redis: its own TTL, no sweeping
        assert 0 < redis_conn.ttl("lrpseg-test:artifacts:old") <= 10
        assert store.sweep_expired_artifacts(now=time.time() + 100) == 0
        return
    assert store.sweep_expired_artifacts() == 0  # nothing due yet
    assert store.sweep_expired_artifacts(now=time.time() + 100) == 1
    assert store.artifact_names("old") == [] and store.artifact_names("new") == sorted(BLOBS)
    store.mark_deleted("new")  # DELETE: gone at once, and off the sweeper's list
    assert store.artifact_names("new") == []
    assert redis_conn.zcard("lrpseg-test:artifact-deadlines") == 0


def test_a_failing_delete_keeps_the_deadline(tmp_path: Path, redis_conn: redis.Redis) -> None:
    """The deadline goes only once the objects are gone: an object-store outage is retried."""

    class Flaky(FileArtifacts):
        fail = True

        def delete(self, job_id: str) -> None:
            if self.fail:
                raise ConnectionError("object store away")
            super().delete(job_id)

    flaky = Flaky(tmp_path, "p")
    store = Store(redis_conn, "lrpseg-test", flaky)
    store.put_artifacts("old", BLOBS, ttl=1)
    with pytest.raises(ConnectionError):
        store.sweep_expired_artifacts(now=time.time() + 5)
    assert redis_conn.zcard("lrpseg-test:artifact-deadlines") == 1
    flaky.fail = False
    assert store.sweep_expired_artifacts(now=time.time() + 5) == 1
    assert store.artifact_names("old") == []
