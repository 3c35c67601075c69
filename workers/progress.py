"""Progress in job.meta (stage + fraction), and the cancellation check between stages."""

from __future__ import annotations

from collections.abc import Callable

from rq.job import Job

from core.claims import ClaimLost
from core.meta import ERROR, FRACTION, STAGE
from core.store import Store


class JobCancelled(Exception):
    """The job was deleted while it ran; stop at the next stage boundary."""


class Reporter:
    """Progress writes; `holds` says whether this run still owns the job (core.claims): a run
    whose claim was taken over stops at its next stage and writes nothing more."""

    def __init__(self, job: Job | None, store: Store, job_id: str, holds: Callable[[], bool] | None = None) -> None:
        self.job, self.store, self.job_id, self.holds = job, store, job_id, holds

    def __call__(self, stage: str, fraction: float) -> None:
        if self.store.is_deleted(self.job_id):
            raise JobCancelled(self.job_id)
        if self.holds is not None and not self.holds():
            raise ClaimLost(self.job_id)
        if self.job is not None:
            self.job.meta[STAGE] = stage
            self.job.meta[FRACTION] = round(float(fraction), 3)
            self.job.save_meta()

    def fail(self, code: str, detail: str) -> None:
        if self.job is not None:
            self.job.meta[ERROR] = {"code": code, "detail": detail}
            self.job.meta[STAGE] = "failed"
            self.job.save_meta()
