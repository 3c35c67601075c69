"""Reading jobs back: RQ job + our record -> JobView, with links built from the request."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.results import Result
from rq.serializers import JSONSerializer

from core.deliveries import Deliveries
from core.meta import BATCH_ID, CALLBACK, ERROR, FRACTION, MODEL, REQUEST_ID, STAGE
from core.pacs import send_targets
from core.store import Store
from schemas.callbacks import PacsDelivery, PacsDeliveryState
from schemas.jobs import JobError, JobLinks, JobState, JobView, Progress
from service.deps import Principal
from service.errors import ApiError

JOB_ID = re.compile(r"[0-9a-f]{32}")

STATES = {
    JobStatus.CREATED: JobState.queued,
    JobStatus.QUEUED: JobState.queued,
    JobStatus.DEFERRED: JobState.queued,
    JobStatus.SCHEDULED: JobState.queued,
    JobStatus.READY_TO_ENQUEUE: JobState.queued,
    JobStatus.RATE_LIMITED: JobState.queued,
    JobStatus.STARTED: JobState.started,
    JobStatus.FINISHED: JobState.finished,
    JobStatus.FAILED: JobState.failed,
    JobStatus.STOPPED: JobState.failed,
    JobStatus.CANCELED: JobState.canceled,
}

# job_id -> self url; (job_id, artifact name) -> artifact url
UrlFor = Callable[[str], str]
ArtifactUrlFor = Callable[[str, str], str]


def not_found(job_id: str) -> ApiError:
    return ApiError(404, "Not found", f"no job {job_id}", code="job-not-found")


def gone(job_id: str, why: str) -> ApiError:
    return ApiError(410, "Gone", f"job {job_id} {why}", code="job-gone")


def fetch_job(connection: Redis, store: Store, job_id: str, principal: Principal) -> Job:
    """The job, or 404 (unknown / someone else's) / 410 (deleted or expired)."""
    if not JOB_ID.fullmatch(job_id):
        raise not_found(job_id)
    record = store.get_record(job_id)
    if record is None or record.owner != principal.id:
        raise not_found(job_id)
    if record.state == "deleted":
        raise gone(job_id, "was deleted")
    try:
        return Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
    except NoSuchJobError:
        raise gone(job_id, "has expired") from None


def state_of(job: Job) -> JobState:
    return STATES.get(job.get_status(refresh=False), JobState.failed)


def error_of(job: Job, meta: dict[str, Any]) -> JobError:
    if isinstance(meta.get(ERROR), dict):
        return JobError(**meta[ERROR])
    result = job.latest_result()
    text = (result.exc_string or "") if result is not None else ""
    if "AbandonedJobError" in text:
        return JobError(code="worker_lost", detail="the worker running this job stopped; it was not retried")
    return JobError(code="internal", detail="the job failed; quote the request id")


def with_urls(result: dict[str, Any], job_id: str, artifact_url: ArtifactUrlFor) -> dict[str, Any]:
    for item in result.get("artifacts", []):
        item["url"] = artifact_url(job_id, item["name"])
    return result


def job_view(
    job: Job, queue: Queue, self_url: UrlFor, artifact_url: ArtifactUrlFor, *, store: Store | None = None
) -> JobView:
    """The job as the API shows it; with `store`, also its callback's delivery status."""
    meta = job.meta or {}
    state = state_of(job)
    view: dict[str, Any] = {
        "job_id": job.id,
        "status": state,
        "model": meta.get(MODEL),
        "request_id": meta.get(REQUEST_ID),
        "created_at": job.created_at,
        "started_at": job.started_at if state is not JobState.queued else None,
        "ended_at": job.ended_at if state in (JobState.finished, JobState.failed) else None,
        "links": JobLinks(self=self_url(job.id)),
    }
    if STAGE in meta:
        view["progress"] = Progress(stage=meta[STAGE], fraction=float(meta.get(FRACTION, 0.0)))
    if state is JobState.queued:
        view["position"] = queue.get_job_position(job.id)
    elif state is JobState.finished:
        result = job.return_value()
        if isinstance(result, dict):
            view["result"] = with_urls(result, job.id, artifact_url)
            view["links"] = JobLinks(
                self=self_url(job.id), artifacts={a["name"]: a["url"] for a in result.get("artifacts", [])}
            )
    elif state is JobState.failed:
        view["error"] = error_of(job, meta)
    if meta.get(BATCH_ID):
        view["batch_id"] = meta[BATCH_ID]
    callback = meta.get(CALLBACK)
    if store is not None and isinstance(callback, dict) and callback.get("delivery_id"):
        deliveries = Deliveries(store.connection, store.prefix)
        view["callback"] = deliveries.status(callback["delivery_id"], callback["url"], callback.get("max_attempts"))
    if store is not None and send_targets(meta):
        view["deliveries"] = pacs_deliveries(Deliveries(store.connection, store.prefix), meta, state)
    return JobView.model_validate(view)


def pacs_deliveries(deliveries: Deliveries, meta: dict[str, Any], state: JobState) -> list[PacsDelivery]:
    """Each PACS destination's delivery; "skipped" when the job ended with nothing to send."""
    out = []
    for target in send_targets(meta):
        status = deliveries.status(target["delivery_id"], target["target"])
        found = deliveries.connection.exists(deliveries.key(target["delivery_id"]))
        fields = status.model_dump(exclude={"url", "status"})
        if found:
            out.append(
                PacsDelivery(
                    kind=target["kind"],
                    target=target["target"],
                    status=PacsDeliveryState(status.status.value),
                    **fields,
                )
            )
            continue
        ended = state in (JobState.finished, JobState.failed)
        why = "the job failed" if state is JobState.failed else "the job made no DICOM output"
        out.append(
            PacsDelivery(
                kind=target["kind"],
                target=target["target"],
                status=PacsDeliveryState.skipped if ended else PacsDeliveryState.pending,
                **{**fields, "last_error": why if ended else None},
            )
        )
    return out


def wait_for_end(connection: Redis, job_id: str, seconds: float) -> None:
    """Block until the job has a result (finished or failed) or `seconds` pass."""
    if seconds <= 0:
        return
    # One XREAD blocks at most 80 % of the client's socket timeout (that timeout is what makes a
    # dead Redis a quick 503 instead of a hung request).
    socket_timeout = connection.connection_pool.connection_kwargs.get("socket_timeout")
    chunk = seconds if socket_timeout is None else 0.8 * float(socket_timeout)
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if connection.xread({Result.get_key(job_id): "0-0"}, block=max(1, int(min(left, chunk) * 1000))):
            return
