"""Redis through Sentinel: the API and a worker process find the master by asking three
Sentinels; the master is SIGKILLed mid-run; the API answers 503 + Retry-After while there is
no master, then takes jobs again; every accepted job (202 after WAIT for a replica) finishes.

Real servers on loopback (tests/sentinel_cluster.py): a master, two replicas, three Sentinels."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import pytest

from core.connect import connect
from core.settings import Settings
from lrpseg.registry import Registry
from service.app import create_app
from tests.sentinel_cluster import MASTER_NAME, SentinelCluster
from tests.service import factories
from tests.service.test_jobs import submit
from tests.workers.processes import job_in, start_worker, stop, wait_for, worker_env

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.slow


def test_a_master_failover_loses_no_accepted_job(tmp_path: Path, registry: Registry, settings: Settings) -> None:
    cluster = SentinelCluster(tmp_path / "redis")
    cluster.start()
    factories.write_models(tmp_path / "models")
    ha = {
        "redis_url": None,
        "redis_sentinels": cluster.addresses.split(","),
        "redis_master": MASTER_NAME,
        "redis_wait_replicas": 1,
        "redis_timeout": 1.0,
        "redis_wait_timeout": 0.5,
        "job_lost_after": 3,
        "maintenance_interval": 1,
    }
    settings = settings.model_copy(update=ha)
    client = TestClient(create_app(settings, registry=registry))
    env = worker_env("unused", tmp_path / "models", job_lost_after=3, maintenance_interval=1)
    del env["LRPSEG_REDIS_URL"]
    env.update({"LRPSEG_REDIS_SENTINELS": cluster.addresses, "LRPSEG_REDIS_MASTER": MASTER_NAME})
    worker = start_worker(env)
    try:
        wait_for(lambda: client.get("/readyz").status_code == 200, 90, "the worker to be ready", interval=0.2)
        image = factories.png_bytes(factories.defect_image(128)[0])
        accepted = []
        deadline = time.monotonic() + 60
        while len(accepted) < 6 and time.monotonic() < deadline:
            response = submit(client, image, {})
            if response.status_code == 503:  # a slow moment (loaded CI): the client is told to retry
                assert int(response.headers["retry-after"]) >= 1, response.text
                time.sleep(0.2)
                continue
            assert response.status_code == 202, response.text
            accepted.append(response.json()["job_id"])
        assert len(accepted) == 6, "the API took no jobs before the failover"
        # every 202 came after a replica confirmed the job
        assert connect(settings).info("replication")["connected_slaves"] == 2

        old = cluster.kill_master()
        unavailable, after = 0, []
        deadline = time.monotonic() + 60
        while len(after) < 3 and time.monotonic() < deadline:
            response = submit(client, image, {})
            if response.status_code == 202:
                after.append(response.json()["job_id"])
            else:
                assert response.status_code == 503, response.text
                assert int(response.headers["retry-after"]) >= 1
                assert response.headers["content-type"] == "application/problem+json"
                unavailable += 1
                time.sleep(0.1)
        assert len(after) == 3, "the API did not take jobs again after the failover"
        assert unavailable > 0, "no 503 seen while the master was gone"
        assert cluster.master_port() != old  # a replica was promoted
        accepted += after

        ended: dict[str, dict] = {}
        deadline = time.monotonic() + 120
        while len(ended) < len(accepted) and time.monotonic() < deadline:
            for job_id in accepted:
                if job_id not in ended and (view := job_in(client, job_id, "finished", "failed")):
                    ended[job_id] = view
            time.sleep(0.2)
        assert len(ended) == len(accepted), f"accepted but lost or stuck: {set(accepted) - set(ended)}"
        failed = {job_id: v.get("error") for job_id, v in ended.items() if v["status"] != "finished"}
        assert not failed, failed
        assert worker.poll() is None, "the worker died with the master"
    finally:
        stop(worker)
        cluster.stop()
