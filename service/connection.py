"""The API's Redis client: short timeouts and few retries, so a dead Redis is a quick 503.

redis-py's defaults (no socket timeout, 10 retries with backoff) would hold a request for
seconds or forever while Redis is away. Here a command fails after about `redis_timeout` s
(or at once when the port refuses; a timeout is not retried), one retry on a fresh
connection covers the stale sockets a Redis restart leaves in the pool, and the pool
reconnects by itself once Redis is back.
"""

from __future__ import annotations

from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.retry import Retry

from core.connect import connect
from core.settings import Settings


def api_redis(settings: Settings) -> Redis:
    return connect(
        settings,
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_timeout,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), retries=1, supported_errors=(RedisConnectionError,)),
        health_check_interval=30,
    )
