"""The worker side: timeouts, progress in job meta, retries only for lost workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from core.settings import Settings
from lrpseg.pipeline import PipelineResult
from lrpseg.render import encoding
from tests.service import factories
from tests.service.test_jobs import submit
from workers import tasks
from workers.worker import build_worker


@pytest.fixture
def png() -> bytes:
    return factories.png_bytes(factories.defect_image(64)[0])


def test_a_job_past_its_timeout_fails_as_timeout(
    make_client: Callable[[Settings], TestClient],
    settings: Settings,
    png: bytes,
    redis_conn: redis.Redis,
    registry: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    quick = settings.model_copy(update={"job_timeout": 1})
    client = make_client(quick)
    location = submit(client, png).headers["location"]

    def slow(*args: Any, **kwargs: Any) -> PipelineResult:
        time.sleep(5)
        raise AssertionError("not reached")

    monkeypatch.setattr(tasks, "run_prepared", slow)
    start = time.monotonic()
    build_worker(quick, connection=redis_conn, registry=registry, heartbeat=False).work(
        burst=True, logging_level="ERROR"
    )
    assert time.monotonic() - start < 4.5
    view = client.get(location).json()
    assert view["status"] == "failed" and view["error"]["code"] == "timeout"


def test_progress_is_reported_in_job_meta(
    client: TestClient, png: bytes, redis_conn: redis.Redis, work: Callable[[], bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, float]] = []
    real = tasks.run_prepared

    def spy(*args: Any, progress: Callable[[str, float], None], **kwargs: Any) -> PipelineResult:
        def record(stage: str, fraction: float) -> None:
            progress(stage, fraction)
            meta = Job.fetch(job_id, connection=redis_conn, serializer=JSONSerializer).get_meta(refresh=True)
            seen.append((meta["stage"], meta["fraction"]))

        return real(*args, progress=record, **kwargs)

    monkeypatch.setattr(tasks, "run_prepared", spy)
    job_id = submit(client, png).json()["job_id"]
    work()
    stages = [s for s, _ in seen]
    assert stages == ["forward", "lrp", "masks", "metrics", "render"]
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and fractions[0] > 0 and fractions[-1] < 1


def test_jobs_carry_only_ids_and_params_as_json(client: TestClient, png: bytes, redis_conn: redis.Redis) -> None:
    job_id = submit(client, png, {"masks": ["gmm"]}).json()["job_id"]
    raw = redis_conn.hget(f"rq:job:{job_id}", "data")
    job = Job.fetch(job_id, connection=redis_conn, serializer=JSONSerializer)
    assert job.func_name == "workers.tasks.process_job" and job.args == [job_id]
    assert job.kwargs["params"]["masks"] == ["gmm"] and job.kwargs["params"]["model"] == factories.SEGMENTER
    assert len(raw) < 2000 and b"PNG" not in raw
    assert job.failure_ttl == 3600 and job.result_ttl == 24 * 3600 and job.retries_left == 1
    assert redis_conn.ttl(f"lrpseg-test:input:{job_id}") > 0


def test_a_failed_job_is_not_retried_but_an_abandoned_one_is(
    client: TestClient, png: bytes, redis_conn: redis.Redis, work: Callable[[], bool], settings: Settings
) -> None:
    job_id = submit(client, png).json()["job_id"]
    redis_conn.delete(f"lrpseg-test:input:{job_id}")
    work()
    job = Job.fetch(job_id, connection=redis_conn, serializer=JSONSerializer)
    assert job.get_status() == "failed"

    # A worker that died mid-job: its entry in the started registry expires; maintenance re-queues the job.
    job_id = submit(client, png).json()["job_id"]
    queue = Queue(settings.queue_name, connection=redis_conn, serializer=JSONSerializer)
    job = Job.fetch(job_id, connection=redis_conn, serializer=JSONSerializer)
    queue.remove(job_id)
    job.set_status("started")
    with redis_conn.pipeline() as pipe:
        pipe.zadd(queue.started_job_registry.key, {f"{job_id}:dead-execution": 1})
        pipe.execute()
    queue.started_job_registry.cleanup()
    assert job.get_status() == "queued" and queue.get_job_position(job_id) == 0
    work()
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "finished"


def test_pngs_are_encoded_by_the_pool_and_stored_before_the_job_ends(
    client: TestClient, png: bytes, redis_conn: redis.Redis, work: Callable[[], bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    real = encoding.encode_png

    def spy(pixels: Any, *args: Any) -> bytes:
        threads.append(threading.current_thread().name)
        return real(pixels, *args)

    monkeypatch.setattr(encoding, "encode_png", spy)
    location = submit(client, png).headers["location"]
    work()
    view = client.get(location).json()
    assert view["status"] == "finished"
    names = {a["name"] for a in view["result"]["artifacts"]}
    assert {"relevance.png", "overlay.png", "segmentation.png", "mask-gmm.png"} <= names
    assert threads and all(t.startswith("lrpseg-png") for t in threads)  # never on the compute thread
    for name in ("overlay.png", "mask-bmm.png"):
        picture = client.get(f"{location}/artifacts/{name}")
        assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")


def test_a_failed_png_encode_fails_the_job(
    client: TestClient, png: bytes, work: Callable[[], bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(pixels: Any, *args: Any) -> bytes:
        raise OSError("disk full")

    monkeypatch.setattr(encoding, "encode_png", broken)
    location = submit(client, png).headers["location"]
    work()
    view = client.get(location).json()
    assert view["status"] == "failed" and view["error"]["code"] == "internal"
    assert client.get(f"{location}/artifacts/overlay.png").status_code in (404, 409, 410)


def test_a_job_fits_the_heap_to_its_pixels_before_it_runs(
    client: TestClient, png: bytes, work: Callable[[], bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    fitted: list[int] = []
    real = tasks.fit_heap

    def spy(pixels: int) -> bool:
        fitted.append(pixels)
        return real(pixels)

    monkeypatch.setattr(tasks, "fit_heap", spy)
    location = submit(client, png).headers["location"]
    work()
    assert client.get(location).json()["status"] == "finished"
    assert fitted == [64 * 64]  # lrpseg.heap: a small job reuses the heap
