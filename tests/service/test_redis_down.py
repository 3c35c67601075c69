"""Redis stopped and restarted under a running service: 503 problem+json while it is away,
/healthz stays up, everything recovers by itself, and no accepted job is lost.

The test starts its own redis-server (AOF, fsync per write, as production persists), the API
with its own Redis client (service.connection: short timeouts) and a real worker process.
"""

from __future__ import annotations

import signal
import time
import warnings
from pathlib import Path

import pytest

from core.settings import Settings
from lrpseg.registry import Registry
from service.app import create_app
from tests.redis_server import RedisServer
from tests.service import factories
from tests.service.test_jobs import submit
from tests.workers.processes import job_in, start_worker, stop, wait_for, worker_env

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.slow

JOBS = 6


def assert_unavailable(response, what: str) -> None:
    assert response.status_code == 503, (what, response.status_code, response.text)
    assert int(response.headers["retry-after"]) >= 1, what


def test_redis_restart_503s_then_recovers_without_losing_accepted_jobs(
    tmp_path: Path, registry: Registry, settings: Settings
) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    factories.write_models(tmp_path / "models")
    settings = settings.model_copy(
        update={"redis_url": server.url, "redis_timeout": 1.0, "job_lost_after": 3, "maintenance_interval": 1}
    )
    client = TestClient(create_app(settings, registry=registry))  # the app's own client, not the fixture's
    worker = start_worker(worker_env(server.url, tmp_path / "models", job_lost_after=3, maintenance_interval=1))
    try:
        wait_for(lambda: client.get("/readyz").status_code == 200, 60, "the worker to be ready", interval=0.2)
        image = factories.png_bytes(factories.defect_image(256)[0])
        accepted = []
        for _ in range(JOBS):
            response = submit(client, image, {})
            assert response.status_code == 202, response.text
            accepted.append(response.json()["job_id"])
        pending = [j for j in accepted if job_in(client, j, "queued", "started")]
        assert pending, "the worker finished everything before Redis stopped; nothing was at stake"

        # A hung Redis (accepts connections, never answers) costs a request redis_timeout, not forever.
        server.proc.send_signal(signal.SIGSTOP)
        try:
            start = time.monotonic()
            assert_unavailable(client.get(f"/v1/jobs/{accepted[0]}"), "GET /v1/jobs/{id} with Redis hung")
            assert time.monotonic() - start < settings.redis_timeout + 3
            assert client.get("/healthz").status_code == 200
        finally:
            server.proc.send_signal(signal.SIGCONT)

        server.stop(signal.SIGTERM)
        start = time.monotonic()
        down = submit(client, image, {})
        assert_unavailable(down, "POST /v1/jobs")
        assert down.headers["content-type"] == "application/problem+json"
        problem = down.json()
        assert problem["status"] == 503 and problem["type"].endswith("/store-unavailable") and problem["request_id"]
        assert_unavailable(client.get(f"/v1/jobs/{accepted[0]}"), "GET /v1/jobs/{id}")
        assert_unavailable(client.get("/readyz"), "/readyz")
        health = client.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert time.monotonic() - start < 10  # answered at once, not after redis-py's retries
        time.sleep(2)  # the worker meets the outage (between or inside jobs)
        assert worker.poll() is None, "the worker died with Redis"

        server.start()  # same port, same data dir: the AOF brings every accepted job back
        ended = {}
        deadline = time.monotonic() + 120
        while len(ended) < JOBS and time.monotonic() < deadline:
            for job_id in accepted:
                if job_id not in ended and (view := job_in(client, job_id, "finished", "failed")):
                    ended[job_id] = view
            time.sleep(0.2)
        statuses = {job_id: view["status"] for job_id, view in ended.items()}
        assert len(ended) == JOBS, f"not ended after the restart: {set(accepted) - set(ended)}"
        assert set(statuses.values()) == {"finished"}, [v.get("error") for v in ended.values()]
        assert worker.poll() is None  # the same process reconnected
        assert client.get("/readyz").status_code == 200
        assert submit(client, image, {"masks": []}).status_code == 202  # and the API takes jobs again
    finally:
        stop(worker)
        server.stop()
