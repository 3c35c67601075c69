"""The one way API, workers and RQ reach Redis: REDIS_URL, or the master that Sentinel names.

Through Sentinel (LRPSEG_REDIS_SENTINELS + LRPSEG_REDIS_MASTER), redis-py asks the Sentinels
for the current master on every new connection; after a failover, connections to the old
master fail (or meet READONLY, which redis-py turns into a connection error) and the next ones
go to the promoted replica. Meanwhile "no master" is a ConnectionError like any other outage:
the API answers 503 + Retry-After and workers wait for Redis, then carry on.
"""

from __future__ import annotations

from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from redis.sentinel import Sentinel

from core.settings import Settings


def connect(settings: Settings, **options: Any) -> Redis:
    """A Redis client for `settings`; `options` are redis-py connection options (timeouts, retry)."""
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    if settings.redis_sentinels:
        sentinel_password = settings.redis_sentinel_password
        sentinel_options = {k: v for k, v in options.items() if k in ("socket_timeout", "socket_connect_timeout")}
        if sentinel_password is not None:
            sentinel_options["password"] = sentinel_password.get_secret_value()
        sentinel = Sentinel(settings.sentinel_addresses(), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call, unused-ignore]
        assert settings.redis_master is not None  # Settings requires it with Sentinels
        master: Redis = sentinel.master_for(settings.redis_master, password=password, **options)  # type: ignore[no-untyped-call, unused-ignore]
        return master
    if password is not None:
        options["password"] = password  # the URL's own password, if any, is replaced
    return Redis.from_url(settings.require_redis_url(), **options)


def wait_for_replicas(connection: Redis, settings: Settings, prefix: str) -> int | None:
    """Block until `redis_wait_replicas` replicas have every write made so far, up to
    `redis_wait_timeout`; the number that did (None when no waiting is configured).

    WAIT counts the writes of the connection it runs on, and a pool hands out any connection:
    so one pipeline (one connection) writes a marker and WAITs for it. Replication is one
    ordered stream, so a replica that has the marker has everything written before it."""
    wanted = settings.redis_wait_replicas
    if wanted <= 0:
        return None
    try:
        with connection.pipeline(transaction=False) as pipe:
            pipe.incr(f"{prefix}:replicated-writes")
            pipe.wait(wanted, int(settings.redis_wait_timeout * 1000))
            _, acked = pipe.execute()
    except RedisError:
        # a reply still on its way must never be read as the answer to a later command
        connection.connection_pool.disconnect()
        raise
    return int(acked)
