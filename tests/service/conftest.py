"""Fixtures: a real Redis (db 13, flushed here only), tiny models, the app, an in-process worker."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import pytest
import redis
import torch

with warnings.catch_warnings():  # starlette's note that httpx2 exists; httpx is what we have
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from core.settings import Settings
from lrpseg.registry import Registry
from service.app import create_app
from tests.service import factories
from workers import runtime
from workers.worker import build_worker


@pytest.fixture(scope="session")
def redis_conn() -> Iterator[redis.Redis]:
    connection = factories.connect_test_redis()
    connection.flushdb()
    yield connection
    connection.flushdb()


@pytest.fixture(autouse=True)
def _clean_db(redis_conn: redis.Redis) -> Iterator[None]:
    threads = torch.get_num_threads()  # a worker runtime sets the process-wide count
    redis_conn.flushdb()
    yield
    runtime.reset()
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return factories.write_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def settings() -> Settings:
    return factories.service_settings(max_wait=30)


@pytest.fixture
def make_client(redis_conn: redis.Redis, registry: Registry) -> Callable[[Settings], TestClient]:
    def make(settings: Settings) -> TestClient:
        return TestClient(create_app(settings, registry=registry, connection=redis_conn))

    return make


@pytest.fixture
def client(make_client: Callable[[Settings], TestClient], settings: Settings) -> TestClient:
    return make_client(settings)


@pytest.fixture
def work(redis_conn: redis.Redis, registry: Registry, settings: Settings) -> Callable[[], bool]:
    """Run the queued jobs with a real RQ worker in this process (burst mode)."""

    def run() -> bool:
        worker = build_worker(settings, connection=redis_conn, registry=registry, name=None, heartbeat=False)
        return worker.work(burst=True, logging_level="WARNING")

    return run
