"""LRPSEG_REDIS_PASSWORD_FILE (issue 15: compose runs Redis with AUTH from a secret): the password
is added to REDIS_URL and a real Redis with `requirepass` accepts the connection."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from core.settings import Settings
from tests.redis_server import RedisServer


def test_the_password_file_goes_into_the_url(tmp_path: Path) -> None:
    secret = tmp_path / "redis_password"
    secret.write_text("s3cr et/@:x\n")
    with_file = Settings(redis_url="redis://redis:6379/0", redis_password_file=secret)
    assert with_file.require_redis_url() == "redis://:s3cr%20et%2F%40%3Ax@redis:6379/0"
    replaced = Settings(redis_url="rediss://:old@redis:6380/1", redis_password_file=secret)
    assert replaced.require_redis_url() == "rediss://:s3cr%20et%2F%40%3Ax@redis:6380/1"
    assert Settings(redis_url="redis://redis:6379/0").require_redis_url() == "redis://redis:6379/0"


@pytest.mark.slow
def test_a_redis_with_requirepass_is_reached_through_the_secret(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        redis.Redis(port=server.port).config_set("requirepass", "pw-15")
        secret = tmp_path / "redis_password"
        secret.write_text("pw-15\n")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(server.url).ping()
        settings = Settings(redis_url=server.url, redis_password_file=secret)
        assert redis.Redis.from_url(settings.require_redis_url()).ping()
    finally:
        server.stop()
