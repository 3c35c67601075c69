"""Job state cannot get stuck or flip (issue 15, defects 2 and 3): paused workers that resume
after their job was re-queued or finished elsewhere record nothing, and a job that is not ended
always ends up with a live claim or a queue entry.

Real Redis and real RQ workers: in-process ones stepped by hand, and a worker process that is
really SIGSTOPped, SIGCONTed and SIGKILLed (tests/workers/paused_worker.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from rq import Queue
from rq.job import Job

from core.claims import Claims
from core.settings import Settings
from core.store import Store
from lrpseg.registry import Registry
from tests.service import factories
from tests.service.test_jobs import submit
from tests.workers.processes import ROOT, job_in, redis_url_of, stop, wait_for, worker_env
from workers.worker import ModelWorker, build_worker

LOST_AFTER = 3


@pytest.fixture
def state_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"job_lost_after": LOST_AFTER, "maintenance_interval": 1})


def small_png() -> bytes:
    return factories.png_bytes(factories.defect_image(64)[0])


def in_process_worker(settings: Settings, conn: redis.Redis, registry: Registry, name: str) -> ModelWorker:
    return build_worker(settings, connection=conn, registry=registry, name=name, heartbeat=False)


def dequeued_by_a_first_worker(
    client: TestClient, settings: Settings, conn: redis.Redis, registry: Registry
) -> tuple[str, ModelWorker, Job, Queue]:
    """A submitted job, dequeued by an in-process worker "first" that has not started it yet."""
    job_id = submit(client, small_png(), {}).json()["job_id"]
    first = in_process_worker(settings, conn, registry, "first")
    dequeued = first.dequeue_job_and_maintain_ttl(timeout=5)
    assert dequeued is not None
    return job_id, first, *dequeued


def rerun_by_a_second_worker(settings: Settings, conn: redis.Redis, registry: Registry) -> None:
    """Past job_lost_after, a worker "second" whose maintenance re-queues the lost job, then runs it."""
    time.sleep(LOST_AFTER + 0.5)
    second = in_process_worker(settings, conn, registry, "second")
    second.clean_registries()
    second.work(burst=True, logging_level="WARNING")


@pytest.mark.slow
def test_a_paused_worker_resuming_after_another_finished_the_job_leaves_it_finished(
    make_client: Callable[[Settings], TestClient],
    state_settings: Settings,
    redis_conn: redis.Redis,
    registry: Registry,
) -> None:
    client = make_client(state_settings)
    job_id, first, job, queue = dequeued_by_a_first_worker(client, state_settings, redis_conn, registry)
    execution = first.prepare_execution(job)  # ...and then the first worker is paused

    rerun_by_a_second_worker(state_settings, redis_conn, registry)
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "finished"

    first.perform_job(job, queue, execution)  # the paused worker resumes: its inputs are gone
    view = client.get(f"/v1/jobs/{job_id}").json()
    assert view["status"] == "finished", view  # not "failed: inputs_missing" over the result
    assert view["result"]["model"]["id"] == factories.SEGMENTER
    assert client.get(f"/v1/jobs/{job_id}/artifacts/segmentation.png").status_code == 200
    assert not Claims(redis_conn, state_settings.key_prefix, LOST_AFTER).open_jobs()


@pytest.mark.slow
def test_a_run_lost_after_its_end_write_is_ended_from_the_result_it_stored(
    make_client: Callable[[Settings], TestClient],
    state_settings: Settings,
    redis_conn: redis.Redis,
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The end write (artifacts, result, inputs deleted) commits, then the worker is lost before RQ
    records "finished" (a SIGKILL, a Redis failover): the re-run ends from the stored result instead
    of failing on the deleted inputs (seen once in the Sentinel failover test)."""
    client = make_client(state_settings)
    job_id, first, job, queue = dequeued_by_a_first_worker(client, state_settings, redis_conn, registry)
    monkeypatch.setattr(first, "_finalize_success", lambda *args: None)  # RQ's "finished" never lands
    first.perform_job(job, queue, first.prepare_execution(job))
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "started"
    assert Store(redis_conn, state_settings.key_prefix).get_inputs(job_id) is None  # the end write went through

    rerun_by_a_second_worker(state_settings, redis_conn, registry)  # it ends the job from the stored result
    view = client.get(f"/v1/jobs/{job_id}").json()
    assert view["status"] == "finished", view
    assert view["result"]["model"]["id"] == factories.SEGMENTER
    assert client.get(f"/v1/jobs/{job_id}/artifacts/segmentation.png").status_code == 200


def test_a_worker_whose_claim_was_taken_over_records_nothing(
    make_client: Callable[[Settings], TestClient],
    state_settings: Settings,
    redis_conn: redis.Redis,
    registry: Registry,
) -> None:
    """The end writes are fenced: a run that lost its claim while it ran writes no status,
    no result, no artifacts, and keeps the inputs of the run that owns the job now."""
    client = make_client(state_settings)
    job_id = submit(client, small_png(), {}).json()["job_id"]
    worker = in_process_worker(state_settings, redis_conn, registry, "late")
    claims = worker.runtime.claims

    def steal(*args: object, **kwargs: object) -> None:  # another run takes the claim mid-job
        redis_conn.set(claims.claim_key(job_id), "another-run", px=60_000)

    worker.runtime.store.put_artifacts = steal  # type: ignore[method-assignment]  # runs just before the end writes
    worker.work(burst=True, logging_level="WARNING")
    status = redis_conn.hget(f"rq:job:{job_id}", "status")
    assert status == b"started"  # as the other run left it: not finished, not failed by us
    assert Store(redis_conn, state_settings.key_prefix).get_inputs(job_id) is not None
    assert redis_conn.get(claims.claim_key(job_id)) == b"another-run"


@pytest.mark.slow
def test_a_worker_stopped_between_dequeue_and_start_then_killed_leaves_no_job_started_forever(
    make_client: Callable[[Settings], TestClient],
    state_settings: Settings,
    redis_conn: redis.Redis,
    registry: Registry,
    tmp_path: Path,
) -> None:
    factories.write_models(tmp_path / "models")
    env = worker_env(redis_url_of(redis_conn), tmp_path / "models", job_lost_after=LOST_AFTER, maintenance_interval=1)
    client = make_client(state_settings.model_copy(update={"job_retries": 0}))
    job_id = submit(client, small_png(), {}).json()["job_id"]
    marker = tmp_path / "dequeued"
    proc = subprocess.Popen([sys.executable, "-m", "tests.workers.paused_worker", str(marker)], env=env, cwd=ROOT)
    try:
        wait_for(marker.exists, 60, "the worker to dequeue the job")
        wait_for(lambda: Path(f"/proc/{proc.pid}/stat").read_text().split()[2] == "T", 10, "the worker to stop")
        time.sleep(LOST_AFTER + 0.5)
        in_process_worker(state_settings, redis_conn, registry, "other").clean_registries()  # its maintenance
        client.get(f"/v1/jobs/{job_id}")  # and the API's reap: the job looks lost
        os.kill(proc.pid, signal.SIGCONT)  # resumes, starts the job, and is killed
        assert proc.wait(timeout=30) == -signal.SIGKILL
        view = wait_for(lambda: job_in(client, job_id, "failed", "finished"), 3 * LOST_AFTER + 5, "the job to end")
        assert view["status"] == "failed" and view["error"]["code"] == "worker_lost", view
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
        stop(proc)
