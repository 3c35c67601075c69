"""Batching: queued jobs that can share one forward + LRP pass are claimed and run together.

Jobs carry a `batch_key` in their meta (`lrpseg.pipeline.batch_key`: model, the params the
pass reads, image (C, H, W)), set at submission. When a worker dequeues a job with a key, it
looks at the next `SCAN_FACTOR * (batch_max - 1)` queued ids and claims up to `batch_max - 1` with
the same key. A claim is one Redis transaction (WATCH the queue, then MULTI: LREM from the
queue + an RQ Execution in the StartedJobRegistry + status started), so a job is either still
queued or started by exactly one worker: if that worker dies, RQ's abandoned-job clean-up
re-queues the job (retries left) or fails it, as for any started job; it is never lost.

The worker then decodes every member, runs the shared pass (`pipeline.forward_batch`) once,
and keeps each member's share here (`take`) for its own RQ execution: each job still goes
through the worker's normal `perform_job` (started -> finished/failed, its own result, its own
progress and timeout), where `workers.tasks` finishes it (masks, metrics, artifacts) from its
share. A member that cannot be loaded is left out of the pass and fails alone in its own run;
if the pass itself fails, every member runs on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import WatchError
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.utils import as_text

from core.meta import BATCH_KEY, BATCH_SIZE
from lrpseg.heap import fit_heap
from lrpseg.pipeline import Forwarded, batch_params, forward_batch
from schemas.params import JobParams
from workers.progress import JobCancelled, Reporter

if TYPE_CHECKING:
    from rq.worker import BaseWorker

    from lrpseg.inputs import JobInputs
    from workers.job_inputs import ReadyJob
    from workers.runtime import WorkerRuntime

log = logging.getLogger("lrpseg.worker")

SCAN_FACTOR = 4  # queued ids looked at per companion wanted: how far a compatible job may jump ahead
CLAIM_ATTEMPTS = 3  # transactions tried when the queue changes under us (then: no companions)


@dataclass
class Member:
    """A job of a batch and its RQ execution (its claim in the StartedJobRegistry)."""

    job: Job
    execution: Execution


@dataclass
class Share:
    """One job's part of a batch pass: its checked inputs and model, and its slice of the pass."""

    ready: ReadyJob
    forwarded: Forwarded


_ready: dict[str, Share] = {}  # job id -> share, for the job's own run in this process


def take(job_id: str) -> Share | None:
    """This job's share of a pass the worker ran before its run (once), or None: run it alone."""
    return _ready.pop(job_id, None)


def forget(job_ids: Sequence[str]) -> None:
    for job_id in job_ids:
        _ready.pop(job_id, None)


# ---- claiming -------------------------------------------------------------------------------


def claim(worker: BaseWorker, queue: Queue, key: str, limit: int) -> list[Member]:
    """Take up to `limit` queued jobs with batch key `key` off `queue` for `worker`, atomically.

    WATCH makes the transaction fail if anyone pushed to or popped from the queue meanwhile
    (an enqueue, another worker's dequeue or claim, a DELETE): then it is tried again with a
    fresh look, `CLAIM_ATTEMPTS` times at most, after which the job runs without companions.
    """
    if limit <= 0:
        return []
    connection = worker.connection
    for _ in range(CLAIM_ATTEMPTS):
        with connection.pipeline() as pipe:
            try:
                pipe.watch(queue.key)
                ids = [as_text(i) for i in pipe.lrange(queue.key, 0, SCAN_FACTOR * limit - 1)]
                jobs = Job.fetch_many(ids, connection=connection, serializer=worker.serializer)
                chosen = [
                    j
                    for j in jobs
                    if j is not None
                    and (j.meta or {}).get(BATCH_KEY) == key
                    and j.get_status(refresh=False) == JobStatus.QUEUED
                ][:limit]
                if not chosen:
                    return []
                pipe.multi()
                members = []
                for job in chosen:
                    pipe.lrem(queue.key, 1, job.id)
                    ttl = worker.get_heartbeat_ttl(job)
                    execution = Execution.create(job, ttl, pipeline=pipe, worker_name=worker.name)
                    job.prepare_for_execution(worker.name, pipeline=pipe)
                    members.append(Member(job, execution))
                pipe.execute()
            except WatchError:
                continue
        for member in members:
            worker.executions[member.execution.id] = member.execution
        return members
    log.info("batch claim gave up after %d attempts (busy queue)", CLAIM_ATTEMPTS)
    return []


# ---- the shared pass --------------------------------------------------------------------------


def run_pass(
    rt: WorkerRuntime, members: Sequence[Member], load: Callable[[WorkerRuntime, str, JobParams], ReadyJob]
) -> int:
    """Load every member, run one pass for those that fit the first loadable one; keep the shares.

    Returns the batch size (members with a share). Members that fail to load (their error is
    theirs: missing or undecodable inputs) or do not fit get no share and run alone later.
    """
    loaded: list[tuple[Member, ReadyJob]] = []
    for member in members:
        try:
            params = JobParams.model_validate(member.job.kwargs["params"])
            loaded.append((member, load(rt, member.job.id, params)))
        except Exception as exc:
            log.info("job %s left out of its batch (%s)", member.job.id, type(exc).__name__)
    if not loaded:
        return 0
    first = loaded[0][1].inputs
    reference = _pass_key(first)
    group = [(m, ready) for m, ready in loaded if _pass_key(ready.inputs) == reference]
    if len(group) < 2:
        return 0
    for member, _ in group:
        member.job.meta[BATCH_SIZE] = len(group)
    progress = _fan_out([Reporter(m.job, rt.store, m.job.id) for m, _ in group])
    images = [ready.inputs.image for _, ready in group]
    model = loaded[0][1].model
    fit_heap(sum(image.pixels for image in images))
    shares = forward_batch(model, first.info, images, first.params, progress=progress, device=rt.device)
    for (member, ready), forwarded in zip(group, shares):
        _ready[member.job.id] = Share(ready, forwarded)
    return len(group)


def _pass_key(inputs: JobInputs) -> tuple[str, tuple[int, ...], dict[str, Any]]:
    """Jobs whose keys agree can share one pass: model, image (C, H, W), the params the pass reads."""
    return (inputs.info.id, inputs.shape, batch_params(inputs.params.params))


def _fan_out(reporters: list[Reporter]) -> Callable[[str, float], None]:
    """Progress of the shared pass to every member's meta; a member deleted meanwhile drops out
    (its own run then ends it as cancelled); when all are gone the pass stops."""
    live = list(reporters)

    def report(stage: str, fraction: float) -> None:
        for reporter in list(live):
            try:
                reporter(stage, fraction)
            except JobCancelled:
                live.remove(reporter)
        if not live:
            raise JobCancelled("every job of the batch was deleted")

    return report
