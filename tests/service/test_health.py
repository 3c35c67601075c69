"""/healthz, /readyz, /metrics, /v1/models."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from core.stats import Stats, WorkerInfo
from tests.service import factories
from tests.service.test_jobs import submit


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_healthz(client: TestClient) -> None:
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["version"]


def test_readyz_needs_a_live_worker_with_the_default_model(client: TestClient, redis_conn: redis.Redis) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["workers"]["ok"] is False and response.json()["checks"]["redis"]["ok"]
    stats = Stats(redis_conn, "lrpseg-test")
    stats.announce_worker(WorkerInfo("w1", time.time(), [factories.SEGMENTER], "cpu", {}))
    response = client.get("/readyz")
    assert response.status_code == 200 and response.json()["ready"] is True
    stats.announce_worker(WorkerInfo("w1", time.time() - 3600, [factories.SEGMENTER], "cpu", {}))
    assert client.get("/readyz").status_code == 503  # its heartbeat is too old
    stats.announce_worker(WorkerInfo("w2", time.time(), [], "cpu", {factories.SEGMENTER: "RuntimeError"}))
    body = client.get("/readyz").json()
    assert body["checks"]["models"]["ok"] is False and factories.SEGMENTER in body["checks"]["models"]["detail"]


def test_readyz_scope_api_needs_only_redis(client: TestClient) -> None:
    """The API pods' readiness under an autoscaler that may run no worker (Kubernetes + KEDA)."""
    response = client.get("/readyz", params={"scope": "api"})
    assert response.status_code == 200 and response.json()["ready"] is True
    assert set(response.json()["checks"]) == {"redis"}
    assert client.get("/readyz").status_code == 503  # the default scope still wants a worker
    assert client.get("/readyz", params={"scope": "nope"}).status_code == 422


def test_models_lists_the_registry(client: TestClient) -> None:
    body = client.get("/v1/models").json()
    assert body["default"] == factories.SEGMENTER
    by_id = {m["id"]: m for m in body["models"]}
    assert (
        by_id[factories.SEGMENTER]["class_names"] == ["background", "defect"] and by_id[factories.SEGMENTER]["default"]
    )
    assert by_id[factories.CLASSIFIER]["input_size"] == 32 and by_id[factories.CLASSIFIER]["kind"] == "classifier"
    assert client.get("/v1/models/tiny-vgg").json()["id"] == factories.CLASSIFIER
    assert client.get("/v1/models/nope").status_code == 404


def test_metrics_count_requests_queue_and_stages(client: TestClient, work: Callable[[], bool]) -> None:
    png = factories.png_bytes(factories.defect_image(64)[0])
    submit(client, png)
    submit(client, png, '{"masks": ["nope"]}')
    before = samples(client.get("/metrics").text)
    assert before[("lrpseg_queue_depth", (("state", "queued"),))] == 1
    assert before[("lrpseg_jobs_rejected_total", (("reason", "invalid-params"),))] == 1
    assert before[("lrpseg_http_requests_total", (("method", "POST"), ("route", "/v1/jobs"), ("status", "202")))] == 1
    work()
    after = samples(client.get("/metrics").text)
    assert after[("lrpseg_queue_depth", (("state", "queued"),))] == 0
    model = ("model", factories.SEGMENTER)
    assert after[("lrpseg_jobs_total", (model, ("status", "finished")))] == 1
    for stage in ("decode", "forward", "lrp", "masks", "metrics", "render"):
        assert after[("lrpseg_job_stage_duration_seconds_count", (model, ("stage", stage)))] == 1


def test_openapi_documents_the_contract(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/v1/jobs"]["post"]
    assert {"202", "413", "415", "422", "503"} <= set(post["responses"])
    assert "JobParams" in spec["components"]["schemas"] and "Problem" in spec["components"]["schemas"]
    assert spec["components"]["schemas"]["JobParams"]["examples"]
    body = post["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]
    params = spec["components"]["schemas"][body]["properties"]["params"]
    assert params["contentSchema"] == {"$ref": "#/components/schemas/JobParams"}
