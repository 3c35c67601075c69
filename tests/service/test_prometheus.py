"""/metrics after real jobs, parsed with prometheus_client's own parser."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis
import torch
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from core.security import hash_key, new_key
from core.settings import Settings
from core.stats import Stats, WorkerInfo
from lrpseg.registry import Registry
from tests.service import factories
from tests.service.test_jobs import submit
from workers import runtime

KEY = new_key()
STAGES = ("decode", "forward", "lrp", "masks", "metrics", "render", "total")


def scrape(client: TestClient) -> dict[str, list]:
    """Metric family name -> its samples."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def value(samples: list, name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (name, labels, [s for s in samples if s.name == name])
    return found[0]


def test_metrics_after_jobs(
    make_client: Callable[[Settings], TestClient],
    settings: Settings,
    work: Callable[[], bool],
    redis_conn: redis.Redis,
) -> None:
    client = make_client(Settings.model_validate({**settings.model_dump(), "api_keys": f"ci:{hash_key(KEY)}"}))
    key = {"X-API-Key": KEY}
    png = factories.png_bytes(factories.defect_image(64)[0])
    fine = submit(client, png, headers=key).json()["job_id"]
    lost = submit(client, png, headers=key).json()["job_id"]
    redis_conn.delete(f"lrpseg-test:input:{lost}")  # this one will fail in the worker
    assert submit(client, png, '{"masks": ["nope"]}', headers=key).status_code == 422
    assert client.get("/v1/models").status_code == 401
    queued = scrape(client)
    assert value(queued["lrpseg_queue_depth"], "lrpseg_queue_depth", state="queued") == 2
    assert work()
    assert client.get(f"/v1/jobs/{fine}", headers=key).json()["status"] == "finished"
    families = scrape(client)

    requests = families["lrpseg_http_requests"]
    assert value(requests, "lrpseg_http_requests_total", method="POST", route="/v1/jobs", status="202") == 2
    assert value(requests, "lrpseg_http_requests_total", method="POST", route="/v1/jobs", status="422") == 1
    assert value(requests, "lrpseg_http_requests_total", method="GET", route="/v1/models", status="401") == 1

    latency = families["lrpseg_http_request_duration_seconds"]
    ok = value(latency, "lrpseg_http_request_duration_seconds_count", route="/v1/jobs", status_class="2xx")
    bad = value(latency, "lrpseg_http_request_duration_seconds_count", route="/v1/jobs", status_class="4xx")
    assert (ok, bad) == (2, 1)
    assert value(latency, "lrpseg_http_request_duration_seconds_sum", route="/v1/jobs", status_class="2xx") > 0

    depth = families["lrpseg_queue_depth"]
    assert value(depth, "lrpseg_queue_depth", state="queued") == 0
    assert value(depth, "lrpseg_queue_depth", state="started") == 0
    assert value(depth, "lrpseg_queue_depth", state="failed") == 1

    jobs = families["lrpseg_jobs"]
    assert value(jobs, "lrpseg_jobs_total", status="finished", model=factories.SEGMENTER) == 1
    assert value(jobs, "lrpseg_jobs_total", status="failed", model=factories.SEGMENTER) == 1
    assert value(families["lrpseg_jobs_submitted"], "lrpseg_jobs_submitted_total", model=factories.SEGMENTER) == 2
    assert value(families["lrpseg_jobs_rejected"], "lrpseg_jobs_rejected_total", reason="invalid-params") == 1

    stages = families["lrpseg_job_stage_duration_seconds"]
    for stage in STAGES:
        labels = {"stage": stage, "model": factories.SEGMENTER}
        count = value(stages, "lrpseg_job_stage_duration_seconds_count", **labels)
        assert count == 1
        assert value(stages, "lrpseg_job_stage_duration_seconds_bucket", le="+Inf", **labels) == count
        assert value(stages, "lrpseg_job_stage_duration_seconds_sum", **labels) > 0
    assert value(families["lrpseg_workers"], "lrpseg_workers") == 0  # the burst worker retired itself
    assert "lrpseg_worker_device_memory_bytes" not in families  # CPU: no device memory series


def test_worker_count_and_device_memory_come_from_heartbeats(
    client: TestClient, settings: Settings, registry: Registry, redis_conn: redis.Redis
) -> None:
    rt = runtime.start(settings, connection=redis_conn, registry=registry, name="cpu-worker", heartbeat=False)
    assert rt.device.type == "cpu" and runtime.device_memory(rt.device) == {}
    families = scrape(client)
    assert value(families["lrpseg_workers"], "lrpseg_workers") == 1
    assert "lrpseg_worker_device_memory_bytes" not in families
    # A CUDA worker's heartbeat, as runtime.announce writes it on a GPU host:
    memory = {"allocated": 123 << 20, "max_allocated": 456 << 20, "reserved": 512 << 20}
    Stats(redis_conn, settings.key_prefix).announce_worker(
        WorkerInfo("gpu-worker", time.time(), [factories.SEGMENTER], "cuda:0", {}, memory)
    )
    families = scrape(client)
    assert value(families["lrpseg_workers"], "lrpseg_workers") == 2
    gauge = families["lrpseg_worker_device_memory_bytes"]
    assert {s.labels["worker"] for s in gauge} == {"gpu-worker"}
    for kind, expected in memory.items():
        got = value(gauge, "lrpseg_worker_device_memory_bytes", worker="gpu-worker", device="cuda:0", kind=kind)
        assert got == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_memory_reads_the_cuda_allocator() -> None:
    device = torch.device("cuda")
    before = runtime.device_memory(device)
    block = torch.empty(64 << 20, dtype=torch.uint8, device=device)
    after = runtime.device_memory(device)
    assert after["allocated"] - before["allocated"] >= 64 << 20
    assert after["max_allocated"] >= after["allocated"] and after["reserved"] >= after["allocated"]
    del block
