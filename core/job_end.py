"""The job-end hook: records a job's completion callback (and its batch's, if it was the last).

It runs in RQ's job callbacks (`on_success` / `on_failure`, registered at enqueue for jobs
that need one; RQ also runs `on_failure` for a job whose worker died, in whichever process
reaps it: a worker, or the API), so it only writes Redis records: nobody waits on somebody
else's HTTP server. The deliverer (workers.deliverer) sends them.
"""

from __future__ import annotations

import logging
from typing import Any

from redis import Redis
from rq.exceptions import AbandonedJobError
from rq.job import Job

from core.batch_records import Batches
from core.deliveries import Deliveries
from core.meta import BATCH_ID, CALLBACK, DEFAULT_HOOK_TTL, ERROR, MODEL, REQUEST_ID, hook_settings
from core.pacs import DICOM_ARTIFACTS, send_targets
from core.store import Store

log = logging.getLogger("lrpseg.callbacks")


def on_job_success(job: Job, connection: Redis, result: Any) -> None:
    job_ended(job, connection, "finished", result=result)


def on_job_failure(job: Job, connection: Redis, exc_type: type, exc: BaseException, tb: Any) -> None:
    if isinstance(exc, AbandonedJobError) and job.retries_left:
        return  # its worker died; RQ queues it again, so it has not ended
    job_ended(job, connection, "failed", worker_lost=isinstance(exc, AbandonedJobError))


def job_ended(job: Job, connection: Redis, status: str, *, worker_lost: bool = False, result: Any = None) -> None:
    """Record the job's completion callback (and its batch's, if it was the last), and the
    sending of its DICOM results to each PACS destination. Never raises: an exception in an RQ
    success callback would fail a job that worked."""
    try:
        meta = job.get_meta(refresh=True) or {}
        prefix, ttl = hook_settings(meta) or ("lrpseg", DEFAULT_HOOK_TTL)
        deleted = Store(connection, prefix).is_deleted(job.id)  # by the caller: no job callback; its batch counts it
        deliveries = Deliveries(connection, prefix)
        callback = meta.get(CALLBACK)
        if not deleted and isinstance(callback, dict) and callback.get("url"):
            error = meta.get(ERROR) if status == "failed" else None
            if status == "failed" and not isinstance(error, dict):
                error = {"code": "worker_lost" if worker_lost else "internal", "detail": "the job failed"}
            body = {
                "event": "job.ended",
                "delivery_id": callback["delivery_id"],
                "job_id": job.id,
                "batch_id": meta.get(BATCH_ID),
                "status": status,
                "model": meta.get(MODEL),
                "request_id": meta.get(REQUEST_ID),
                "error": error,
                "links": {"self": callback.get("job_url") or ""},
            }
            deliveries.schedule(
                callback["delivery_id"],
                callback["url"],
                body,
                subject=f"job:{job.id}",
                event="job.ended",
                ttl=ttl,
                wait_for=job.id,
            )
        if not deleted and status == "finished":
            schedule_pacs(job.id, meta, result, deliveries, ttl)
        if meta.get(BATCH_ID):
            Batches(connection, prefix).job_ended(
                meta[BATCH_ID], job.id, "deleted" if deleted else status, deliveries, ttl
            )
    except Exception:
        log.exception("could not record the callback of job %s", job.id)


def schedule_pacs(job_id: str, meta: dict[str, Any], result: Any, deliveries: Deliveries, ttl: int) -> None:
    """One delivery per destination of a finished job that has DICOM outputs (a job without any,
    such as a PNG input, sends nothing: its view says "skipped")."""
    names = (
        {a.get("name") for a in result.get("artifacts", []) if isinstance(a, dict)}
        if isinstance(result, dict)
        else set()
    )
    if not names & set(DICOM_ARTIFACTS):
        return
    for target in send_targets(meta):
        deliveries.schedule(
            target["delivery_id"],
            target["target"],
            {"job_id": job_id},
            subject=f"job:{job_id}",
            event="job.dicom",
            ttl=ttl,
            wait_for=job_id,
            kind=target["kind"],
        )
