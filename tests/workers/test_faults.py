"""Faults end jobs cleanly: a worker SIGKILLed mid-job (re-queued, or failed as worker_lost), a job
that raises, times out or runs out of device memory (fails with its reason, the worker serves on).

Real Redis, real RQ workers: worker processes (`python -m launch worker`) for the kills,
the in-process burst worker for the rest; jobs go in and come out through the HTTP API.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import torch
from fastapi.testclient import TestClient

from core import recovery
from core.settings import Settings
from core.store import Store
from tests.service import factories
from tests.service.test_jobs import submit
from tests.workers.processes import job_in, redis_url_of, start_worker, stop, wait_for, worker_env
from workers import tasks
from workers.worker import build_worker

LOST_AFTER, MAINTENANCE = 3, 1  # seconds, instead of the defaults' 30 and 10


@pytest.fixture
def fault_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"job_lost_after": LOST_AFTER, "maintenance_interval": MAINTENANCE})


@pytest.fixture
def big_png() -> bytes:
    """1024² takes the tiny U-Net ~3 s (one thread): long enough to be killed while it runs."""
    return factories.png_bytes(factories.defect_image(1024)[0])


def fault_worker_env(redis_conn: redis.Redis, tmp_path: Path) -> dict[str, str]:
    """The environment of a worker process with the tiny test models and the short fault timings."""
    factories.write_models(tmp_path / "models")
    return worker_env(
        redis_url_of(redis_conn), tmp_path / "models", job_lost_after=LOST_AFTER, maintenance_interval=MAINTENANCE
    )


def small_png(size: int = 64, seed: int = 0) -> bytes:
    return factories.png_bytes(factories.defect_image(size, seed=seed)[0])


def test_default_bound_on_lost_jobs_is_at_most_a_minute() -> None:
    defaults = Settings()
    assert defaults.job_lost_after + defaults.maintenance_interval <= 60
    assert defaults.claim_renewal * 2 < defaults.job_lost_after  # one late renewal is not a loss


@pytest.mark.slow
def test_sigkilled_worker_job_is_requeued_and_finished_by_another_worker(
    make_client: Callable[[Settings], TestClient],
    fault_settings: Settings,
    redis_conn: redis.Redis,
    tmp_path: Path,
    big_png: bytes,
) -> None:
    env = fault_worker_env(redis_conn, tmp_path)
    client = make_client(fault_settings)  # job_retries=1: one re-run after a lost worker
    first = start_worker(env)
    second = None
    try:
        job_id = submit(client, big_png, {}).json()["job_id"]
        running = wait_for(lambda: job_in(client, job_id, "started"), 60, "the first worker to start the job")
        assert running["progress"]["stage"] != "done"
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        killed_at = time.monotonic()

        second = start_worker(env)  # cleans up at start and every MAINTENANCE s: finds the lost job
        view = wait_for(lambda: job_in(client, job_id, "finished", "failed"), 90, "the job to end on the second worker")
        assert view["status"] == "finished", view
        assert view["result"]["model"]["id"] == factories.SEGMENTER
        # Bounded: lost after LOST_AFTER s, found within MAINTENANCE s more, then ~3 s of work
        # (and the second worker's start-up); never left "started".
        assert time.monotonic() - killed_at < 60
        job = client.app.state.queue.fetch_job(job_id)
        assert job.retries_left == 0  # the re-run used the one retry
        assert job.worker_name != f"{os.uname().nodename}.{first.pid}"
    finally:
        stop(first)
        if second is not None:
            stop(second)


@pytest.mark.slow
def test_sigkilled_worker_job_without_retries_fails_as_worker_lost_even_with_no_worker_left(
    make_client: Callable[[Settings], TestClient],
    fault_settings: Settings,
    redis_conn: redis.Redis,
    tmp_path: Path,
    big_png: bytes,
) -> None:
    env = fault_worker_env(redis_conn, tmp_path)
    client = make_client(fault_settings.model_copy(update={"job_retries": 0}))
    worker = start_worker(env)
    try:
        job_id = submit(client, big_png, {}).json()["job_id"]
        wait_for(lambda: job_in(client, job_id, "started"), 60, "the worker to start the job")
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        killed_at = time.monotonic()

        # No worker is left to clean up: reading the job does it (core.recovery).
        assert job_in(client, job_id, "started") is not None
        view = wait_for(lambda: job_in(client, job_id, "failed"), 30, "the job to fail as worker_lost", interval=0.25)
        lost_after = time.monotonic() - killed_at
        assert view["error"]["code"] == "worker_lost" and "worker" in view["error"]["detail"]
        assert LOST_AFTER - 1.5 <= lost_after <= LOST_AFTER + 5  # not before its claim lapsed, soon after
        store = Store(redis_conn, fault_settings.key_prefix)
        assert store.get_inputs(job_id) is None  # the upload (patient data) went with the failure
    finally:
        stop(worker)


def test_a_clean_up_that_outlived_its_lock_leaves_the_next_holders_lock_alone(
    client: TestClient, redis_conn: redis.Redis
) -> None:
    """A's clean-up runs past its 1 s lock; B takes the expired lock; A ending must not free B's."""
    queue = client.app.state.queue
    key = queue.registry_cleaning_key
    taken_by_b: list[str] = []

    def slow_clean_up() -> None:
        wait_for(lambda: not redis_conn.exists(key), 5, "A's lock to expire")
        token = recovery.acquire_lock(redis_conn, key, 30)
        assert token is not None
        taken_by_b.append(token)

    assert recovery.clean_queue(queue, None, lock_ttl=1, after=slow_clean_up)
    assert taken_by_b, "B never took the lock"
    assert redis_conn.get(key) in (taken_by_b[0], taken_by_b[0].encode())  # still B's
    assert not recovery.clean_queue(queue, None, lock_ttl=1)  # and it still keeps the others out
    assert not recovery.release_lock(redis_conn, key, "not-b") and redis_conn.exists(key)
    assert recovery.release_lock(redis_conn, key, taken_by_b[0]) and not redis_conn.exists(key)


def test_a_live_worker_keeps_its_claim_on_a_job_longer_than_job_lost_after(
    make_client: Callable[[Settings], TestClient],
    fault_settings: Settings,
    redis_conn: redis.Redis,
    registry: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The claim is renewed while the job runs: readers (which clean up expired claims) never see it lost."""
    client = make_client(fault_settings)
    _sizes(monkeypatch, {48: lambda: time.sleep(LOST_AFTER + 2)})
    job_id = submit(client, small_png(48), {"masks": []}).json()["job_id"]
    seen: list[str] = []
    done = threading.Event()

    def read() -> None:
        reader = make_client(fault_settings)
        while not done.is_set():
            seen.append(reader.get(f"/v1/jobs/{job_id}").json()["status"])
            time.sleep(0.2)

    poller = threading.Thread(target=read, daemon=True)
    poller.start()
    worker = build_worker(fault_settings, connection=redis_conn, registry=registry, heartbeat=False)
    try:
        assert worker.work(burst=True, logging_level="WARNING")
    finally:
        done.set()
        poller.join(timeout=5)
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "finished"
    assert "started" in seen and "queued" not in seen[seen.index("started") :], seen
    assert client.app.state.queue.fetch_job(job_id).retries_left == 1  # never taken for lost


def _sizes(monkeypatch: pytest.MonkeyPatch, effects: dict[int, Callable[[], Any]]) -> None:
    """Make the real pipeline misbehave for images of the given heights (the rest run for real)."""
    real = tasks.run_prepared

    def run_prepared(model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        effect = effects.get(inputs.image.height)
        if effect is not None:
            effect()
        return real(model, inputs, *args, **kwargs)

    monkeypatch.setattr(tasks, "run_prepared", run_prepared)


def _raise(exc: BaseException) -> Callable[[], None]:
    def effect() -> None:
        raise exc

    return effect


def _submit_pair(client: TestClient, bad_size: int) -> tuple[str, str]:
    bad = submit(client, small_png(bad_size), {"masks": []})
    good = submit(client, small_png(64, seed=1), {"masks": []})
    assert bad.status_code == good.status_code == 202, (bad.text, good.text)
    return bad.json()["job_id"], good.json()["job_id"]


def test_a_job_that_raises_fails_with_a_reason_and_the_worker_serves_the_next(
    client: TestClient, work: Callable[[], bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    _sizes(monkeypatch, {48: _raise(RuntimeError("boom in the pipeline"))})
    bad, good = _submit_pair(client, 48)
    assert work()  # one worker, both jobs
    failed = client.get(f"/v1/jobs/{bad}").json()
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "internal", "detail": "the worker failed (RuntimeError); quote the request id"}
    assert client.get(f"/v1/jobs/{good}").json()["status"] == "finished"
    assert client.app.state.queue.fetch_job(bad).retries_left == 0  # an error is not retried


def test_a_job_past_its_timeout_fails_as_timeout_and_the_worker_serves_the_next(
    make_client: Callable[[Settings], TestClient],
    settings: Settings,
    work: Callable[[], bool],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = make_client(settings.model_copy(update={"job_timeout": 2}))
    _sizes(monkeypatch, {48: lambda: time.sleep(30)})
    bad, good = _submit_pair(client, 48)
    start = time.monotonic()
    assert work()
    assert time.monotonic() - start < 15  # the 30 s job was stopped at its 2 s limit
    failed = client.get(f"/v1/jobs/{bad}").json()
    assert failed["status"] == "failed" and failed["error"]["code"] == "timeout", failed
    assert client.get(f"/v1/jobs/{good}").json()["status"] == "finished"


def test_out_of_device_memory_fails_the_job_frees_the_cache_and_the_worker_serves_on(
    client: TestClient, work: Callable[[], bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    _sizes(monkeypatch, {48: _raise(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))})
    emptied: list[bool] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the worker itself runs on the CPU
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    bad, good = _submit_pair(client, 48)
    assert work()
    failed = client.get(f"/v1/jobs/{bad}").json()
    assert failed["status"] == "failed" and failed["error"]["code"] == "out_of_memory", failed
    assert "memory" in failed["error"]["detail"]
    assert emptied == [True]  # once, after the failed job only
    view = client.get(f"/v1/jobs/{good}").json()
    assert view["status"] == "finished" and view["result"]["segmentation"] is not None
    assert np.isfinite(view["result"]["timings"]["total"])
