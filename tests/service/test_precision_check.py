"""params.precision at submission: bf16/fp16 only where a CUDA worker serves them (422 otherwise)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis
from fastapi.testclient import TestClient

from core.settings import Settings
from core.stats import Stats, WorkerInfo
from tests.service import factories
from tests.service.test_jobs import submit


@pytest.fixture
def png() -> bytes:
    return factories.png_bytes(factories.defect_image(64)[0])


def announce(redis_conn: redis.Redis, settings: Settings, device: str) -> None:
    info = WorkerInfo(f"worker-{device}", time.time(), [factories.SEGMENTER], device, {})
    Stats(redis_conn, settings.key_prefix).announce_worker(info)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_cpu_service_refuses_low_precision(client: TestClient, png: bytes, precision: str) -> None:
    response = submit(client, png, {"precision": precision})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["errors"][0]["field"] == "params.precision"
    assert "CUDA worker" in problem["detail"] and "fp32" in problem["detail"]


def test_fp32_is_the_default_and_accepted(client: TestClient, png: bytes) -> None:
    assert submit(client, png, {"precision": "fp32"}).status_code == 202
    assert submit(client, png, {"precision": "fp8"}).status_code == 422  # not a precision


def test_auto_service_asks_its_live_workers(
    make_client: Callable[[Settings], TestClient], settings: Settings, png: bytes, redis_conn: redis.Redis
) -> None:
    client = make_client(settings.model_copy(update={"device": "auto"}))
    assert submit(client, png, {"precision": "bf16"}).status_code == 202  # no worker yet: it may be a GPU one
    announce(redis_conn, settings, "cpu")
    refused = submit(client, png, {"precision": "bf16"})
    assert refused.status_code == 422 and "the workers run on cpu" in refused.json()["detail"]
    announce(redis_conn, settings, "cuda:0")
    assert submit(client, png, {"precision": "bf16"}).status_code == 202


def test_a_cpu_worker_fails_a_low_precision_job_as_bad_input(
    make_client: Callable[[Settings], TestClient], settings: Settings, png: bytes, work: Callable[[], bool]
) -> None:
    client = make_client(settings.model_copy(update={"device": "auto"}))  # accepted: no live worker to ask
    location = submit(client, png, {"precision": "fp16"}).headers["location"]
    work()  # the test worker runs on the CPU
    view = client.get(location).json()
    assert view["status"] == "failed" and view["error"]["code"] == "bad_input"
    assert "CUDA worker" in view["error"]["detail"]
