"""Progress in job.meta (stage + fraction), and the cancellation check between stages."""

from __future__ import annotations

from rq.job import Job

from core.meta import ERROR, FRACTION, STAGE
from core.store import Store


class JobCancelled(Exception):
    """The job was deleted while it ran; stop at the next stage boundary."""


class Reporter:
    def __init__(self, job: Job | None, store: Store, job_id: str) -> None:
        self.job, self.store, self.job_id = job, store, job_id

    def __call__(self, stage: str, fraction: float) -> None:
        if self.store.is_deleted(self.job_id):
            raise JobCancelled(self.job_id)
        if self.job is not None:
            self.job.meta[STAGE] = stage
            self.job.meta[FRACTION] = round(float(fraction), 3)
            self.job.save_meta()

    def fail(self, code: str, detail: str) -> None:
        if self.job is not None:
            self.job.meta[ERROR] = {"code": code, "detail": detail}
            self.job.meta[STAGE] = "failed"
            self.job.save_meta()
