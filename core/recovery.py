"""Jobs whose worker died or stalled: found, then re-queued or failed as `worker_lost`, never left "started".

The decisions are the claim state machine's (core.claims): a job that is not ended, holds no
live claim, is not queued and has not been seen alive for `job_lost_after` s is *lost*. The
reaper takes its claim atomically, then re-queues it (it never started, or retries are left) or
fails it for good as `worker_lost`, deleting its inputs (patient data). Workers sweep every
`maintenance_interval` s; the API reaps a job when a client reads it, so a lost job is resolved
even when no worker is left.

RQ's own clean-ups of the started registry and the intermediate list are *not* run: they act on
a snapshot and write job status unguarded (a paused worker resuming after them could leave a job
"started" forever, or flip an ended one). Only the expired registry entries are dropped here.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from redis import Redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.rate_limit import RateLimitRegistry
from rq.registry import DeferredJobRegistry, FailedJobRegistry, FinishedJobRegistry, ReadyJobRegistry
from rq.utils import now, utcformat

from core.claims import ClaimLost, Claims, JobKeys, new_token
from core.job_end import job_ended
from core.meta import ERROR, FRACTION, MODEL, STAGE, meta_of
from core.stats import Stats
from core.store import Store

log = logging.getLogger("lrpseg.recovery")

WORKER_LOST = "the worker running this job stopped (killed, crashed or lost Redis) and no retry was left"


def job_keys(queue: Queue, job_id: str) -> JobKeys:
    return JobKeys(
        job=queue.job_class.key_for(job_id),
        queue=queue.key,
        intermediate=queue.intermediate_queue_key,
        started=queue.started_job_registry.key,
    )


class Reaper:
    """Finds lost jobs of one queue and ends or re-queues them (see the module docstring)."""

    def __init__(self, queue: Queue, store: Store, stats: Stats, lost_after: float) -> None:
        self.queue, self.store, self.stats, self.lost_after = queue, store, stats, lost_after
        self.claims = Claims(queue.connection, store.prefix, lost_after)

    def reap(self, job_id: str) -> str:
        """What was found: 'requeued', 'failed', or why the job is not lost (claimed, queued, ...)."""
        keys = job_keys(self.queue, job_id)
        token = new_token("reaper")
        verdict = self.claims.reap(job_id, keys, token, self.lost_after)
        if not verdict.startswith("lost:"):
            return verdict
        job = self.queue.fetch_job(job_id)
        if job is None:  # deleted under us
            self.claims.release(job_id, keys, token)
            return "gone"
        never_started = verdict == "lost:queued"
        if never_started or job.retries_left:
            log.warning("job %s lost its worker; re-queued", job_id)
            self._save_meta(job, {STAGE: "requeued", FRACTION: 0.0}, token)
            self.claims.requeue(job_id, keys, token, use_retry=not never_started)
            return "requeued"
        log.warning("job %s lost its worker; no retry left: failed", job_id)
        try:
            self._fail(job, keys, token)
        except ClaimLost:
            return "claimed"
        self.claims.release(job_id, keys, token)
        job_ended(job, self.queue.connection, "failed", worker_lost=True)
        self.stats.count_job(str(meta_of(job).get(MODEL) or "unknown"), "failed")
        return "failed"

    def sweep(self) -> dict[str, int]:
        """Reap every open job; how many ended up in each verdict."""
        counts: dict[str, int] = {}
        for job_id in self.claims.open_jobs():
            verdict = self.reap(job_id)
            counts[verdict] = counts.get(verdict, 0) + 1
        return counts

    def _save_meta(self, job: Job, update: dict[str, object], token: str) -> None:
        meta = meta_of(job)
        meta.update(update)
        job.meta = meta
        data = job.serializer.dumps(meta)
        self.claims.fenced(job.id, token, lambda pipe: pipe.hset(job.key, "meta", data))

    def _fail(self, job: Job, keys: JobKeys, token: str) -> None:
        """Failed for good, in one transaction that commits only while the reaper holds the claim."""
        meta = meta_of(job)
        meta.update({STAGE: "failed", ERROR: {"code": "worker_lost", "detail": WORKER_LOST}})
        job.meta = meta
        prefix = f"{job.id}:"
        stale = [m for m in self.queue.connection.zrange(keys.started, 0, -1) if _text(m).startswith(prefix)]

        def write(pipe: object) -> None:
            job._status = JobStatus.FAILED
            job.ended_at = now()
            pipe.hset(job.key, mapping={"status": JobStatus.FAILED, "ended_at": utcformat(job.ended_at)})  # type: ignore[attr-defined]
            pipe.hset(job.key, "meta", job.serializer.dumps(meta))  # type: ignore[attr-defined]
            FailedJobRegistry(queue=self.queue).add(job, ttl=job.failure_ttl, exc_string=WORKER_LOST, pipeline=pipe)
            if stale:
                pipe.zrem(keys.started, *stale)  # type: ignore[attr-defined]
            pipe.lrem(keys.intermediate, 0, job.id)  # type: ignore[attr-defined]
            self.store.destroy_data(job.id, pipe)

        self.claims.fenced(job.id, token, write)
        self.store.destroy_key(job.id)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def clean_registries(queue: Queue) -> None:
    """RQ's registry clean-ups that only drop expired entries; the started registry's expired
    claims are dropped without touching their jobs (the Reaper decides those)."""
    kwargs = {
        "name": queue.name,
        "connection": queue.connection,
        "job_class": queue.job_class,
        "serializer": queue.serializer,
    }
    FinishedJobRegistry(**kwargs).cleanup()
    queue.connection.zremrangebyscore(queue.started_job_registry.key, 0, time.time())
    for registry in (FailedJobRegistry, DeferredJobRegistry, ReadyJobRegistry):
        registry(**kwargs).cleanup()
    for rate_limit_registry in RateLimitRegistry.all(queue.connection):
        rate_limit_registry.cleanup()


# Deletes the lock only if it still holds our token (it may have expired and been taken by another).
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def acquire_lock(connection: Redis, key: str, ttl: int) -> str | None:
    """Take `key` for `ttl` s; the token that releases it, or None if another process holds it."""
    token = uuid.uuid4().hex
    return token if connection.set(key, token, nx=True, ex=max(1, ttl)) else None


def release_lock(connection: Redis, key: str, token: str) -> bool:
    """Release `key` if it is still ours; False if it expired (and may now be another's)."""
    return bool(connection.eval(_RELEASE, 1, key, token))


def clean_queue(queue: Queue, reaper: Reaper | None, lock_ttl: int, after: Callable[[], None] | None = None) -> bool:
    """The registry clean-up and a sweep for lost jobs, under a short lock; False if another
    process holds it. (The lock expires after `lock_ttl` s: a holder killed mid-way blocks
    the others only that long; RQ's own lock lives 899 s.)"""
    token = acquire_lock(queue.connection, queue.registry_cleaning_key, lock_ttl)
    if token is None:
        return False
    try:
        clean_registries(queue)
        if reaper is not None:
            reaper.sweep()
        if after is not None:
            after()
    finally:
        release_lock(queue.connection, queue.registry_cleaning_key, token)
    return True


def reap_if_abandoned(job: Job, reaper: Reaper) -> Job:
    """For a job a client reads that is not ended: reap it if lost, return it re-read."""
    if job.get_status(refresh=False) in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.STOPPED):
        return job
    if reaper.reap(job.id) in ("requeued", "failed"):
        job.refresh()
    return job
