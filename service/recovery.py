"""Jobs whose worker died: found, then re-queued or failed as `worker_lost`, never left "started".

A running job holds an entry in RQ's StartedJobRegistry that expires `job_lost_after` s after
its worker last renewed it (`workers.faults.ClaimKeeper`). RQ's registry clean-up moves an
expired entry's job back to the queue (retries left) or to the failed registry. Workers run
that clean-up every `maintenance_interval` s; the API runs it too when a client reads a job
whose claim has expired, so a lost job is resolved even when no worker is left to clean up.

Two differences from RQ's own `Worker.clean_registries`:
- RQ's clean-up lock lives 899 s: a worker killed while holding it would stop all clean-ups
  for 15 minutes. Ours expires after `maintenance_interval` s.
- `abandoned_handler` records why (job.meta.error = worker_lost) and deletes the job's inputs
  (patient data) as soon as the job has failed for good.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from rq import Queue
from rq.exceptions import AbandonedJobError
from rq.job import Job, JobStatus
from rq.registry import clean_registries

from service.stats import Stats
from service.store import Store

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
            meta.update({"stage": "requeued", "fraction": 0.0})
        else:
            log.warning("job %s lost its worker; no retry left: failed", job.id)
            meta.update({"stage": "failed", "error": {"code": "worker_lost", "detail": WORKER_LOST}})
            store.delete_inputs(job.id)
            stats.count_job(str(meta.get("model") or "unknown"), "failed")
        job.save_meta()
        return True

    return handle


def clean_queue(queue: Queue, handlers: list[Any], lock_ttl: int, after: Callable[[], None] | None = None) -> bool:
    """RQ's registry clean-up for one queue under a short lock; False if another process holds it."""
    if not queue.connection.set(queue.registry_cleaning_key, 1, nx=True, ex=max(1, lock_ttl)):
        return False
    try:
        clean_registries(queue, handlers)
        if after is not None:
            after()
    finally:
        queue.release_maintenance_lock()
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
