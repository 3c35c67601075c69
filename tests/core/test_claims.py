"""The claim scripts (core.claims) on a real Redis: who may run a job, who may end it, what is lost."""

from __future__ import annotations

import time

import pytest
import redis

from core.claims import ClaimLost, Claims, JobKeys, fence, fenced_connection
from tests.service import factories

PREFIX = "lrpseg-test"
KEYS = JobKeys(job="rq:job:j1", queue="rq:queue:q", intermediate="rq:queue:q:intermediate", started="rq:wip:q")


@pytest.fixture
def conn() -> redis.Redis:
    connection = factories.connect_test_redis()
    connection.flushdb()
    return connection


def queued_job(conn: redis.Redis, status: str = "queued") -> Claims:
    conn.hset(KEYS.job, mapping={"status": status, "retries_left": 1})
    claims = Claims(conn, PREFIX, ttl=0.5)
    claims.opened("j1")
    return claims


def test_one_run_at_a_time_and_never_an_ended_job(conn: redis.Redis) -> None:
    claims = queued_job(conn)
    conn.rpush(KEYS.queue, "j1")
    assert claims.claim("j1", KEYS, "a") == "ok"
    assert conn.llen(KEYS.queue) == 0  # claimed: no longer also queued
    assert claims.claim("j1", KEYS, "b") == "taken"
    assert claims.renew("j1", "a") and not claims.renew("j1", "b")
    assert claims.release("j1", KEYS, "a")
    conn.hset(KEYS.job, "status", "finished")
    assert claims.claim("j1", KEYS, "b") == "ended"
    assert claims.open_jobs() == []
    conn.delete(KEYS.job)
    assert claims.claim("j1", KEYS, "b") == "gone"


def test_a_job_with_no_claim_and_no_queue_entry_is_reaped_once_stale(conn: redis.Redis) -> None:
    claims = queued_job(conn, "started")
    assert claims.claim("j1", KEYS, "a") == "ok"
    assert claims.reap("j1", KEYS, "r", stale_after=0.3) == "claimed"
    time.sleep(0.6)  # the claim lapsed (ttl 0.5 s) and the job was last seen 0.6 s ago
    assert claims.reap("j1", KEYS, "r", stale_after=10) == "young"
    assert claims.reap("j1", KEYS, "r", stale_after=0.3) == "lost:started"
    assert claims.claim("j1", KEYS, "a") == "taken"  # the paused owner comes back: too late
    assert claims.requeue("j1", KEYS, "r", use_retry=True)
    assert conn.lrange(KEYS.queue, 0, -1) == [b"j1"] and conn.hget(KEYS.job, "retries_left") == b"0"
    assert conn.hget(KEYS.job, "status") == b"queued"
    assert claims.reap("j1", KEYS, "r", stale_after=0.0) == "queued"


def test_fenced_transactions_commit_only_under_the_claim(conn: redis.Redis) -> None:
    claims = queued_job(conn, "started")
    assert claims.claim("j1", KEYS, "a") == "ok"
    fenced = fenced_connection(conn)
    with fence(claims, "j1", "a"), fenced.pipeline() as pipe:
        pipe.hset(KEYS.job, "status", "finished")
        pipe.execute()
    assert conn.hget(KEYS.job, "status") == b"finished"
    conn.set(claims.claim_key("j1"), "b")  # another run owns it now
    with pytest.raises(ClaimLost), fence(claims, "j1", "a"), fenced.pipeline() as pipe:
        pipe.hset(KEYS.job, "status", "failed")
        pipe.execute()
    with pytest.raises(ClaimLost):
        claims.fenced("j1", "a", lambda pipe: pipe.hset(KEYS.job, "status", "failed"))
    assert conn.hget(KEYS.job, "status") == b"finished"
