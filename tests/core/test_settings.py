"""Settings that fail at start-up instead of misbehaving later."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.settings import Settings


def test_sentinels_need_a_master_name() -> None:
    with pytest.raises(ValidationError, match="needs LRPSEG_REDIS_MASTER"):
        Settings(redis_url=None, redis_sentinels=["127.0.0.1:26379"])


def test_a_wait_for_replicas_must_end_inside_the_socket_timeout() -> None:
    with pytest.raises(ValidationError, match="must be below LRPSEG_REDIS_TIMEOUT"):
        Settings(redis_wait_replicas=1, redis_wait_timeout=1.0, redis_timeout=1.0)
    ok = Settings(redis_wait_replicas=1, redis_wait_timeout=0.5, redis_timeout=1.0)
    assert ok.redis_wait_timeout < ok.redis_timeout
    assert Settings(redis_wait_replicas=0, redis_wait_timeout=9.0, redis_timeout=1.0).redis_wait_replicas == 0
