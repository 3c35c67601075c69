"""Batch records in Redis: {p}:batch:{id} (hash) and {p}:batch:{id}:ended (job id -> end status).

The API creates and reads them; the job-end hook (core.job_end) notes each job's end, and the
last one schedules the batch callback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redis import Redis
from rq.job import Job

from core.deliveries import Deliveries
from core.meta import BATCH_ID, hook_settings, meta_of
from schemas.batches import BatchState


@dataclass(frozen=True)
class BatchRecord:
    batch_id: str
    owner: str
    created: float
    expires: float
    state: str  # live | deleted
    items: list[dict[str, Any]]  # {index, name, ground_truth, job_id}
    callback_url: str | None
    delivery_id: str | None
    self_url: str
    archive_url: str


class Batches:
    def __init__(self, connection: Redis, prefix: str = "lrpseg") -> None:
        self.connection = connection
        self.prefix = prefix

    def key(self, batch_id: str) -> str:
        return f"{self.prefix}:batch:{batch_id}"

    def create(self, record: BatchRecord, ttl: int) -> None:
        fields = {
            "owner": record.owner,
            "created": repr(record.created),
            "expires": repr(record.expires),
            "state": record.state,
            "items": json.dumps(record.items),
            "callback_url": record.callback_url or "",
            "delivery_id": record.delivery_id or "",
            "self_url": record.self_url,
            "archive_url": record.archive_url,
        }
        with self.connection.pipeline() as pipe:
            pipe.hset(self.key(record.batch_id), mapping=fields)
            pipe.expire(self.key(record.batch_id), ttl)
            pipe.execute()

    def get(self, batch_id: str) -> BatchRecord | None:
        raw = {k.decode(): v.decode() for k, v in self.connection.hgetall(self.key(batch_id)).items()}
        if not raw:
            return None
        return BatchRecord(
            batch_id,
            raw["owner"],
            float(raw["created"]),
            float(raw["expires"]),
            raw["state"],
            json.loads(raw["items"]),
            raw.get("callback_url") or None,
            raw.get("delivery_id") or None,
            raw["self_url"],
            raw["archive_url"],
        )

    def mark_deleted(self, batch_id: str) -> None:
        """Keep a tombstone (the id answers 410) that holds no file names: only indexes and job ids."""
        record = self.get(batch_id)
        items = [{"index": i.get("index"), "job_id": i.get("job_id")} for i in (record.items if record else [])]
        with self.connection.pipeline() as pipe:
            pipe.hset(self.key(batch_id), mapping={"state": "deleted", "items": json.dumps(items)})
            pipe.delete(self.key(batch_id) + ":ended")
            pipe.execute()

    def job_ended(self, batch_id: str, job_id: str, status: str, deliveries: Deliveries, ttl: int) -> None:
        """From a job's end hook: note it; the last one schedules the batch callback."""
        record = self.get(batch_id)
        if record is None or record.state != "live" or not record.callback_url or not record.delivery_id:
            return
        ended_key = self.key(batch_id) + ":ended"
        with self.connection.pipeline() as pipe:
            pipe.hset(ended_key, job_id, status)
            pipe.expire(ended_key, ttl)
            pipe.hgetall(ended_key)
            ended = {k.decode(): v.decode() for k, v in pipe.execute()[2].items()}
        job_ids = {item["job_id"] for item in record.items}
        if not job_ids <= set(ended):
            return
        counts = {"finished": 0, "failed": 0}
        for job in job_ids:
            counts[ended[job]] = counts.get(ended[job], 0) + 1
        status_ = batch_state_of_ended(counts["finished"], len(job_ids))
        body = {
            "event": "batch.ended",
            "delivery_id": record.delivery_id,
            "batch_id": batch_id,
            "status": status_.value,
            "total": len(job_ids),
            "counts": counts,
            "links": {"self": record.self_url, "archive": record.archive_url},
        }
        deliveries.schedule(
            record.delivery_id,
            record.callback_url,
            body,
            subject=f"batch:{batch_id}",
            event="batch.ended",
            ttl=ttl,
            wait_for=job_id,  # the last job: RQ marks it ended just after this hook
        )


def job_deleted(job: Job, connection: Redis) -> None:
    """A batch job deleted before it ran: no end hook will run for it, so count it as ended
    ("deleted") here, or the batch callback would wait for it forever."""
    meta = meta_of(job)
    hooks = hook_settings(meta)
    if not meta.get(BATCH_ID) or hooks is None:  # not in a batch, or its batch has no callback
        return
    prefix, ttl = hooks
    Batches(connection, prefix).job_ended(meta[BATCH_ID], job.id, "deleted", Deliveries(connection, prefix), ttl)


def batch_state_of_ended(finished: int, total: int) -> BatchState:
    if finished == total:
        return BatchState.finished
    return BatchState.failed if finished == 0 else BatchState.partial
