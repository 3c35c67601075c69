"""One real service (uvicorn + a worker process, test models, test Redis) for the client's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from lrpseg.registry import Registry
from tests.service import factories
from tests.service.live import live_service, live_settings


@pytest.fixture(scope="module")
def redis_conn() -> Iterator[redis.Redis]:
    connection = factories.connect_test_redis()
    connection.flushdb()
    yield connection
    connection.flushdb()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return factories.write_models(Path(tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="module")
def url(redis_conn: redis.Redis, registry: Registry) -> Iterator[str]:
    with live_service(redis_conn, registry, live_settings()) as base:
        yield base
