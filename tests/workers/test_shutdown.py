"""Graceful shutdown: SIGTERM to a worker process lets its running job finish and leaves the
queued jobs queued, for the next worker; a second SIGTERM stops it cold and re-queues the job."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from core.settings import Settings
from core.stats import Stats
from lrpseg.registry import Registry
from tests.service import factories
from tests.service.test_jobs import submit
from tests.workers.processes import job_in, redis_url_of, start_worker, stop, wait_for, worker_env
from workers.worker import build_worker

pytestmark = pytest.mark.slow


@pytest.fixture
def models(tmp_path: Path) -> Path:
    factories.write_models(tmp_path / "models")
    return tmp_path / "models"


def big_png() -> bytes:
    return factories.png_bytes(factories.defect_image(1024)[0])  # ~3 s on one thread


def test_sigterm_finishes_the_running_job_and_leaves_the_queue_to_the_next_worker(
    client: TestClient, work: Callable[[], bool], redis_conn: redis.Redis, settings: Settings, models: Path
) -> None:
    worker = start_worker(worker_env(redis_url_of(redis_conn), models))
    try:
        running = submit(client, big_png(), {}).json()["job_id"]
        wait_for(lambda: job_in(client, running, "started"), 60, "the worker to start the job")
        small = factories.png_bytes(factories.defect_image(64)[0])
        queued = [submit(client, small, {"masks": []}).json()["job_id"] for _ in range(2)]

        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
        view = client.get(f"/v1/jobs/{running}").json()
        assert view["status"] == "finished", view  # finished, not cut off
        for job_id in queued:
            assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
        stats = Stats(redis_conn, settings.key_prefix)
        assert stats.live_workers(settings.worker_max_age) == []  # it retired itself

        assert work()  # the next worker runs what was left
        assert all(client.get(f"/v1/jobs/{j}").json()["status"] == "finished" for j in queued)
    finally:
        stop(worker)


def test_second_sigterm_stops_cold_and_the_interrupted_job_is_requeued(
    client: TestClient, work: Callable[[], bool], redis_conn: redis.Redis, models: Path
) -> None:
    worker = start_worker(worker_env(redis_url_of(redis_conn), models))
    try:
        job_id = submit(client, big_png(), {}).json()["job_id"]
        wait_for(lambda: job_in(client, job_id, "started"), 60, "the worker to start the job")
        worker.send_signal(signal.SIGTERM)
        time.sleep(1.2)  # RQ ignores a repeat within 1 s (its pool sends signals twice)
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        view = client.get(f"/v1/jobs/{job_id}").json()
        assert view["status"] == "queued", view  # not failed: a stop is not the job's fault
        assert work()
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "finished"
    finally:
        stop(worker)


def test_unsubscribe_ends_the_pubsub_thread_when_the_main_thread_is_slow(
    redis_conn: redis.Redis, registry: Registry, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race a loaded machine loses: the pubsub thread handles the unsubscribe's reply and
    goes back to its loop before the stop. RQ's order then left it waiting for a subscription
    for 60 s, which redis-py >= 8.2's stop() joined: the warm stop hung."""
    worker = build_worker(settings, connection=redis_conn, registry=registry, heartbeat=False)
    try:
        worker.subscribe()
        thread, pubsub = worker.pubsub_thread, worker.pubsub
        assert thread is not None and pubsub is not None
        send = pubsub.unsubscribe

        def unsubscribe_then_stall(*args: object) -> None:
            send(*args)
            wait_for(lambda: not pubsub.subscribed, 10, "the reply to reach the pubsub thread")
            time.sleep(0.3)  # the thread is back in its loop now, unless it was told to stop

        monkeypatch.setattr(pubsub, "unsubscribe", unsubscribe_then_stall)
        done = threading.Event()
        caller = threading.Thread(target=lambda: (worker.unsubscribe(), done.set()), daemon=True)
        caller.start()
        assert done.wait(10), "unsubscribe waited on the pubsub thread"
        assert not thread.is_alive()
    finally:
        worker.runtime.stop()
