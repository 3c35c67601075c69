"""What a worker does so faults end jobs cleanly: claim renewal while a job runs, device OOM.

RQ's SimpleWorker runs a job in its own main thread, so nothing renews the job's claim (its
StartedJobRegistry entry) while the job runs; RQ therefore gives the claim job_timeout + 60 s,
and the job of a killed worker would look "started" for up to six minutes. ClaimKeeper renews
the claim every `claim_renewal` s from a thread, so the claim can be short (`job_lost_after`)
and a lost job is found within job_lost_after + maintenance_interval (core.recovery).
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from redis.exceptions import RedisError
from rq.exceptions import AbandonedJobError
from rq.job import Job

from core.meta import ERROR

if TYPE_CHECKING:
    from rq.executions import Execution
    from rq.worker import BaseWorker

log = logging.getLogger("lrpseg.worker")


class ClaimKeeper:
    """While a job runs: renew its claim every `interval` s, and call `tick` (the registry
    clean-up, so lost jobs of other workers are found even while every live worker is busy)."""

    def __init__(
        self,
        worker: BaseWorker,
        job: Job,
        execution: Execution,
        interval: float,
        tick: Callable[[], None] | None = None,
        renew: Callable[[], bool] | None = None,
    ) -> None:
        self.worker, self.job, self.execution, self.interval, self.tick = worker, job, execution, interval, tick
        self.renew = renew  # extends the job's claim (core.claims); False once another run owns it
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lrpseg-claim-{job.id[:8]}", daemon=True)

    def __enter__(self) -> ClaimKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=max(1.0, self.interval))

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            try:
                self.worker.maintain_heartbeats(self.job, self.execution)
                if self.renew is not None and not self.renew():
                    log.warning("job %s: claim lost to another run; this run will record nothing", self.job.id)
                if self.tick is not None:
                    self.tick()
            except RedisError as exc:  # Redis away: the claim may lapse; the job is then re-queued
                log.warning("job %s: claim renewal failed (%s)", self.job.id, type(exc).__name__)
            except Exception:
                log.exception("job %s: claim renewal failed", self.job.id)


def is_out_of_memory(exc: BaseException) -> bool:
    """A device allocation failure (CUDA OOM; torch raises it as torch.OutOfMemoryError)."""
    return isinstance(exc, torch.OutOfMemoryError)


def failed_for_memory(job: Job) -> bool:
    error = (job.meta or {}).get(ERROR)
    return isinstance(error, dict) and error.get("code") == "out_of_memory"


def release_device_memory() -> None:
    """After an OOM job: drop its tensors (its frames are gone by now) and the allocator's cache."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        log.info("released cached device memory after an out-of-memory job")


def keep_retries_for(exc_type: type[BaseException]) -> bool:
    """Failures that are not the job's fault keep its retries: the worker died or was stopped cold."""
    return issubclass(exc_type, (AbandonedJobError, SystemExit, KeyboardInterrupt))
