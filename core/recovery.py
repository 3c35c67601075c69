"""Jobs whose worker died: found, then re-queued or failed as `worker_lost`, never left "started".

A running job holds an entry in RQ's StartedJobRegistry that expires `job_lost_after` s after
its worker last renewed it (`workers.faults.ClaimKeeper`). RQ's registry clean-up moves an
expired entry's job back to the queue (retries left) or to the failed registry. Workers run
that clean-up every `maintenance_interval` s; the API runs it too when a client reads a job
whose claim has expired, so a lost job is resolved even when no worker is left to clean up.

Differences from RQ's own `Worker.clean_registries`:
- RQ's clean-up lock lives 899 s: a worker killed while holding it would stop all clean-ups
  for 15 minutes. Ours expires after `maintenance_interval` s, and holds a token so a holder
  whose lock expired (and was taken by another process) never deletes the other's lock.
- The clean-up also runs off the main thread (the API's thread pool, ClaimKeeper's thread).
  RQ runs a lost job's `on_failure` hook (the worker_lost callback) under SIGALRM, which only
  the main thread may set: there it would fail and the callback be lost. Off the main thread
  the hook's timeout is a timer instead (`ThreadTimerPenalty`).
- `abandoned_handler` records why (job.meta.error = worker_lost) and deletes the job's inputs
  (patient data) as soon as the job has failed for good.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any

from redis import Redis
from rq import Queue
from rq.exceptions import AbandonedJobError
from rq.job import Job, JobStatus
from rq.rate_limit import RateLimitRegistry
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ReadyJobRegistry,
    StartedJobRegistry,
)
from rq.timeouts import BaseDeathPenalty, TimerDeathPenalty

from core.meta import ERROR, FRACTION, MODEL, STAGE
from core.stats import Stats
from core.store import Store

log = logging.getLogger("lrpseg.recovery")

ExceptionHandler = Callable[[Job, type[BaseException], BaseException, TracebackType | None], bool]

WORKER_LOST = "the worker running this job stopped (killed, crashed or lost Redis) and no retry was left"


def abandoned_handler(store: Store, stats: Stats) -> ExceptionHandler:
    """An RQ exception handler for AbandonedJobError (other exceptions pass through untouched)."""

    def handle(job: Job, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> bool:
        if not issubclass(exc_type, AbandonedJobError):
            return True
        meta = job.meta
        if job.retries_left:
            log.warning("job %s lost its worker; re-queued (%d retries left)", job.id, job.retries_left - 1)
            meta.update({STAGE: "requeued", FRACTION: 0.0})
        else:
            log.warning("job %s lost its worker; no retry left: failed", job.id)
            meta.update({STAGE: "failed", ERROR: {"code": "worker_lost", "detail": WORKER_LOST}})
            store.delete_inputs(job.id)
            stats.count_job(str(meta.get(MODEL) or "unknown"), "failed")
        job.save_meta()
        return True

    return handle


class ThreadTimerPenalty(TimerDeathPenalty):
    """RQ's TimerDeathPenalty (raises the timeout in the calling thread from a timer) without its
    constructor's side effect: that one rewrites the exception class's `__init__` for the whole
    process, which would change the message of every later job timeout."""

    def __init__(self, timeout: int, exception: type[BaseException] = Exception, **kwargs: Any) -> None:
        BaseDeathPenalty.__init__(self, timeout, exception, **kwargs)
        self._target_thread_id = threading.current_thread().ident
        self._timer = None


def death_penalty() -> type[BaseDeathPenalty] | None:
    """The penalty for hooks run by the clean-up: RQ's default (SIGALRM) on the main thread, a timer elsewhere."""
    return None if threading.current_thread() is threading.main_thread() else ThreadTimerPenalty


def clean_registries(queue: Queue, handlers: list[Any]) -> None:
    """`rq.registry.clean_registries`, with the started registry's hooks run under `death_penalty()`."""
    kwargs: dict[str, Any] = {
        "name": queue.name,
        "connection": queue.connection,
        "job_class": queue.job_class,
        "serializer": queue.serializer,
    }
    FinishedJobRegistry(**kwargs).cleanup()
    StartedJobRegistry(**kwargs, death_penalty_class=death_penalty()).cleanup(exception_handlers=handlers)
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


def clean_queue(queue: Queue, handlers: list[Any], lock_ttl: int, after: Callable[[], None] | None = None) -> bool:
    """RQ's registry clean-up for one queue under a short lock; False if another process holds it."""
    token = acquire_lock(queue.connection, queue.registry_cleaning_key, lock_ttl)
    if token is None:
        return False
    try:
        clean_registries(queue, handlers)
        if after is not None:
            after()
    finally:
        release_lock(queue.connection, queue.registry_cleaning_key, token)
    return True


def claim_expired(queue: Queue, job: Job, now: float | None = None) -> bool:
    """Whether this job holds claims in the started registry and all of them have expired."""
    prefix = f"{job.id}:".encode()
    entries = queue.connection.zrange(queue.started_job_registry.key, 0, -1, withscores=True)
    scores = [score for member, score in entries if _bytes(member).startswith(prefix)]
    now = time.time() if now is None else now
    return bool(scores) and max(scores) < now


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def reap_if_abandoned(job: Job, queue: Queue, store: Store, stats: Stats, lock_ttl: int) -> Job:
    """For a job reported "started" whose claim expired: run the clean-up now, return the job re-read."""
    if job.get_status(refresh=False) != JobStatus.STARTED or not claim_expired(queue, job):
        return job
    clean_queue(queue, [abandoned_handler(store, stats)], lock_ttl)
    job.refresh()
    return job
