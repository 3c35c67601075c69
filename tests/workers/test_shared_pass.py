"""Batching in the worker: compatible queued jobs share one pass, each keeps its own RQ lifecycle.

Real Redis, the real app (TestClient), a real burst worker in this process.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from core.settings import Settings
from lrpseg.registry import Registry
from tests.lrpseg.test_pipeline import BATCH_RTOL, assert_close_json, without_timings
from tests.service import factories
from tests.service.test_jobs import submit
from workers import shared_pass
from workers.worker import ModelWorker, build_worker


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Batching is off by default (bit-identical results); these tests turn it on."""
    return settings.model_copy(update={"batch_max": 4})


def png(seed: int, size: int = 64) -> bytes:
    return factories.png_bytes(factories.defect_image(size, seed=seed)[0])


def truth_png(seed: int, size: int = 64) -> bytes:
    return factories.png_bytes(factories.defect_image(size, seed=seed)[1].astype(np.uint8) * 255)


def view(client: TestClient, job_id: str) -> dict[str, Any]:
    return client.get(f"/v1/jobs/{job_id}").json()


def relevance(client: TestClient, job_id: str) -> np.ndarray:
    response = client.get(f"/v1/jobs/{job_id}/artifacts/relevance.npy")
    assert response.status_code == 200, response.text
    return np.load(io.BytesIO(response.content), allow_pickle=False)


def fetch(redis_conn: redis.Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=redis_conn, serializer=JSONSerializer)


def run_worker(settings: Settings, redis_conn: redis.Redis, registry: Registry) -> ModelWorker:
    worker = build_worker(settings, connection=redis_conn, registry=registry, heartbeat=False)
    worker.work(burst=True, logging_level="WARNING")
    return worker


def queue_of(settings: Settings, redis_conn: redis.Redis) -> Queue:
    return Queue(settings.queue_name, connection=redis_conn, serializer=JSONSerializer)


def comparable(result: dict[str, Any]) -> dict[str, Any]:
    """A result without what differs between two runs of the same job: timings, the job's URLs."""
    out = without_timings(result)
    out["artifacts"] = [{k: v for k, v in a.items() if k != "url"} for a in out["artifacts"]]
    return out


# (image seed, params, with ground truth): one model, one size, one pass; the tails differ
COMPATIBLE = [
    (0, {}, True),
    (1, {"masks": ["gmm"], "artifacts": ["relevance.npy", "mask-gmm.png"]}, False),
    (2, {"visualisation": {"threshold": 90}}, True),
    (3, {}, False),
]


def submit_all(client: TestClient, jobs: list[tuple[int, dict, bool]], size: int = 64) -> list[str]:
    ids = []
    for seed, params, with_truth in jobs:
        response = submit(client, png(seed, size), params, truth_png(seed, size) if with_truth else None)
        assert response.status_code == 202, response.text
        ids.append(response.json()["job_id"])
    return ids


@pytest.mark.slow
def test_compatible_jobs_run_as_one_batch_and_equal_single_runs(
    make_client: Callable[[Settings], TestClient],
    settings: Settings,
    redis_conn: redis.Redis,
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fitted: list[int] = []
    monkeypatch.setattr(shared_pass, "fit_heap", fitted.append)
    client = make_client(settings)
    first = submit_all(client, COMPATIBLE[:1])
    other = submit_all(client, [(5, {"lrp": {"composite": "montavon"}}, False)])[0]  # another pass: not batched
    smaller = submit(client, png(6, 32)).json()["job_id"]  # another shape: not batched
    batch = first + submit_all(client, COMPATIBLE[1:])
    keys = {fetch(redis_conn, i).meta["batch_key"] for i in batch}
    assert len(keys) == 1 and None not in keys
    assert fetch(redis_conn, other).meta["batch_key"] not in keys | {None}

    worker = run_worker(settings, redis_conn, registry)
    worker.refresh()  # RQ's own per-worker counts, from Redis
    assert worker.successful_job_count == 6 and worker.failed_job_count == 0
    assert fitted == [4 * 64 * 64]  # the heap is fitted to the whole pass (lrpseg.heap)
    for job_id in batch:
        job = fetch(redis_conn, job_id)
        result = view(client, job_id)["result"]
        assert result["timings"]["batch_size"] == 4 and job.meta["batch_size"] == 4
        assert job.get_status() == "finished" and job.latest_result().type.name == "SUCCESSFUL"
        assert job.started_at is not None and job.ended_at >= job.started_at
    for job_id in (other, smaller):
        assert view(client, job_id)["result"]["timings"]["batch_size"] == 1
    queue = queue_of(settings, redis_conn)
    assert queue.count == 0 and queue.started_job_registry.count == 0

    # the same jobs again, one by one: equal results
    single = make_client(settings.model_copy(update={"batch_max": 1}))
    again = submit_all(single, COMPATIBLE)
    run_worker(settings.model_copy(update={"batch_max": 1}), redis_conn, registry)
    worst = 0.0
    for batched_id, single_id in zip(batch, again):
        b, s = view(client, batched_id), view(single, single_id)
        assert s["result"]["timings"]["batch_size"] == 1
        assert_close_json(comparable(b["result"]), comparable(s["result"]), "result")
        rb, rs = relevance(client, batched_id), relevance(single, single_id)
        worst = max(worst, float(np.abs(rb - rs).max() / np.abs(rs).max()))
    assert worst < BATCH_RTOL


def test_batching_off_runs_every_job_alone(
    make_client: Callable[[Settings], TestClient], settings: Settings, redis_conn: redis.Redis, registry: Registry
) -> None:
    off = settings.model_copy(update={"batch_max": 1})
    client = make_client(off)
    ids = submit_all(client, COMPATIBLE[:3])
    run_worker(off, redis_conn, registry)
    for job_id in ids:
        assert view(client, job_id)["result"]["timings"]["batch_size"] == 1
        assert "batch_size" not in fetch(redis_conn, job_id).meta


def test_a_job_deleted_while_queued_is_not_run(
    client: TestClient, settings: Settings, redis_conn: redis.Redis, registry: Registry
) -> None:
    ids = submit_all(client, COMPATIBLE[:3])
    assert client.delete(f"/v1/jobs/{ids[1]}").status_code == 204
    run_worker(settings, redis_conn, registry)
    for job_id in (ids[0], ids[2]):
        assert view(client, job_id)["result"]["timings"]["batch_size"] == 2
    assert client.get(f"/v1/jobs/{ids[1]}").status_code == 410
    assert not redis_conn.exists(f"lrpseg-test:artifacts:{ids[1]}", f"rq:job:{ids[1]}")


def test_a_bad_companion_fails_alone(
    client: TestClient, settings: Settings, redis_conn: redis.Redis, registry: Registry
) -> None:
    ids = submit_all(client, COMPATIBLE[:3])
    redis_conn.hset(f"lrpseg-test:input:{ids[1]}", "image", b"\x89PNG\r\n\x1a\n broken")  # damaged in the store
    run_worker(settings, redis_conn, registry)
    bad = view(client, ids[1])
    assert bad["status"] == "failed" and bad["error"]["code"] == "bad_input"
    for job_id in (ids[0], ids[2]):
        done = view(client, job_id)
        assert done["status"] == "finished" and done["result"]["timings"]["batch_size"] == 2


def test_a_job_deleted_during_the_shared_pass_ends_cancelled_alone(
    client: TestClient,
    settings: Settings,
    redis_conn: redis.Redis,
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = submit_all(client, COMPATIBLE[:3])
    real = shared_pass.forward_batch

    def delete_then_run(*args: Any, **kwargs: Any) -> Any:
        assert fetch(redis_conn, ids[2]).get_status() == "started"  # claimed: DELETE only marks it
        assert client.delete(f"/v1/jobs/{ids[2]}").status_code == 204
        return real(*args, **kwargs)

    monkeypatch.setattr(shared_pass, "forward_batch", delete_then_run)
    run_worker(settings, redis_conn, registry)
    assert client.get(f"/v1/jobs/{ids[2]}").status_code == 410
    assert not redis_conn.exists(f"lrpseg-test:artifacts:{ids[2]}", f"lrpseg-test:input:{ids[2]}")
    assert fetch(redis_conn, ids[2]).meta["error"]["code"] == "cancelled"
    for job_id in ids[:2]:
        assert view(client, job_id)["result"]["timings"]["batch_size"] == 3


def test_a_failing_pass_runs_its_jobs_one_by_one(
    client: TestClient,
    settings: Settings,
    redis_conn: redis.Redis,
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = submit_all(client, COMPATIBLE[:3])

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a device error in the shared pass")

    monkeypatch.setattr(shared_pass, "forward_batch", broken)
    run_worker(settings, redis_conn, registry)
    for job_id in ids:
        done = view(client, job_id)
        assert done["status"] == "finished" and done["result"]["timings"]["batch_size"] == 1


# ---- claim safety ---------------------------------------------------------------------------


def dequeue_and_claim(worker: ModelWorker, queue: Queue) -> tuple[Job, list[shared_pass.Member]]:
    """What the worker does before the pass: RQ's dequeue, then ModelWorker.claim_batch."""
    found = Queue.dequeue_any([queue], None, connection=worker.connection, serializer=JSONSerializer)
    assert found is not None
    job, _ = found
    members = worker.claim_batch(job, queue, job.meta["batch_key"], worker.runtime.settings.batch_max - 1)
    assert members[0].job is job
    return job, members[1:]


def test_claimed_companions_of_a_dead_worker_are_retried_then_failed_never_lost(
    client: TestClient, settings: Settings, redis_conn: redis.Redis, registry: Registry
) -> None:
    ids = submit_all(client, COMPATIBLE[:3])
    queue = queue_of(settings, redis_conn)
    dead = build_worker(settings, connection=redis_conn, registry=registry, name="doomed", heartbeat=False)
    primary, members = dequeue_and_claim(dead, queue)
    assert primary.id == ids[0] and [m.job.id for m in members] == ids[1:]
    assert queue.count == 0
    for job_id in ids:
        assert fetch(redis_conn, job_id).get_status() == "started" and job_id in queue.started_job_registry
        assert view(client, job_id)["status"] == "started"
    rival = build_worker(settings, connection=redis_conn, registry=registry, name="rival", heartbeat=False)
    assert shared_pass.claim(rival, queue, primary.meta["batch_key"], 7) == []  # claimed once only

    # the worker dies here (nothing more runs); its claims lapse; RQ's clean-up finds them
    later = time.time() + settings.job_lost_after + 1
    queue.started_job_registry.cleanup(timestamp=later, exception_handlers=rival._exc_handlers)
    for job_id in ids:
        assert fetch(redis_conn, job_id).get_status() == "queued" and queue.get_job_position(job_id) is not None
    assert fetch(redis_conn, ids[1]).retries_left == 0

    # the second time a worker dies under them, they fail as worker_lost
    dead2 = build_worker(settings, connection=redis_conn, registry=registry, name="doomed-2", heartbeat=False)
    _, members = dequeue_and_claim(dead2, queue)
    assert len(members) == 2
    queue.started_job_registry.cleanup(timestamp=time.time() + settings.job_lost_after + 1)
    for job_id in ids:
        gone = view(client, job_id)
        assert gone["status"] == "failed" and gone["error"]["code"] == "worker_lost", gone


def test_a_claim_retries_when_the_queue_changes_under_it(
    client: TestClient,
    settings: Settings,
    redis_conn: redis.Redis,
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = submit_all(client, COMPATIBLE[:2])
    queue = queue_of(settings, redis_conn)
    worker = build_worker(settings, connection=redis_conn, registry=registry, heartbeat=False)
    calls: list[int] = []
    real = shared_pass.Job.fetch_many

    def racing(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:  # another client enqueues between the look and the transaction
            ids.append(submit(client, png(7)).json()["job_id"])
        return real(*args, **kwargs)

    monkeypatch.setattr(shared_pass.Job, "fetch_many", racing)
    members = shared_pass.claim(worker, queue, fetch(redis_conn, ids[0]).meta["batch_key"], 7)
    assert len(calls) == 2  # the first transaction was refused (WATCH), the second saw the new job
    assert [m.job.id for m in members] == ids and queue.count == 0
    assert all(fetch(redis_conn, i).get_status() == "started" for i in ids)


def test_jobs_in_a_shared_pass_hold_their_claims_and_are_not_reaped(
    make_client: Callable[[Settings], TestClient],
    settings: Settings,
    redis_conn: redis.Redis,
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 15's reaper takes a job with no claim and no queue entry, last seen long ago: the
    companions of a batch (long queued, started for the pass) must hold claims through it."""
    from core import recovery
    from core.stats import Stats
    from core.store import Store

    lost_after = 3
    settings = settings.model_copy(update={"job_lost_after": lost_after, "job_retries": 0})
    client = make_client(settings)
    ids = submit_all(client, COMPATIBLE[:3])
    time.sleep(lost_after + 0.5)  # queued long enough to look lost once off the queue
    real = shared_pass.forward_batch
    verdicts: list[dict[str, int]] = []

    def sweep_then_run(*args: Any, **kwargs: Any) -> Any:  # another worker's maintenance, mid-pass
        store, stats = Store(redis_conn, settings.key_prefix), Stats(redis_conn, settings.key_prefix)
        verdicts.append(recovery.Reaper(queue_of(settings, redis_conn), store, stats, lost_after).sweep())
        return real(*args, **kwargs)

    monkeypatch.setattr(shared_pass, "forward_batch", sweep_then_run)
    run_worker(settings, redis_conn, registry)
    assert verdicts == [{"claimed": 3}]
    for job_id in ids:
        assert view(client, job_id)["status"] == "finished"
