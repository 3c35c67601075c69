"""A complete received series -> one job through the submission path, and the sweeper that
completes the quiet ones.

Why the sweeper runs in the API (a task of its lifespan) and not in workers: a series becomes a
job through the one submission path (service.submission: model and input validation, queue
capacity, per-key job slots, Idempotency-Key), which lives in service/ and which workers may not
import; every deployment runs the API. Several API processes sweep safely: a claim is one Lua
step (pacs.intake), so each series is completed by one of them. A restart loses nothing: the
intakes and their due times live in Redis, a claim whose completer died is taken over when its
lease ends, and the job that completer may already have queued is found again through the
Idempotency-Key `dicom-series:{generation}` (the series zip is byte-identical), so it is never
queued twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from redis.exceptions import RedisError
from rq import Queue

from core.settings import Settings
from core.store import Inputs, Store, Upload
from lrpseg.registry import Registry, RegistryError
from pacs.intake import Claimed, SeriesIntake, series_zip
from service.deps import Principal
from service.errors import ApiError, retry_later
from service.prometheus import ServiceMetrics
from service.ratelimit import JobSlots
from service.submission import Intake

log = logging.getLogger("lrpseg.series")
RETRYABLE = (429, 503)  # the queue or the key's slots are full: the series waits and is tried again


@dataclass(frozen=True)
class SeriesJobs:
    intake: SeriesIntake
    settings: Settings
    registry: Registry
    queue: Queue
    store: Store
    metrics: ServiceMetrics
    slots: JobSlots | None

    def complete(self, claimed: Claimed) -> str:
        """Queue the claimed series' job and end the intake; the job id. ApiError when the series
        cannot become a job: a 4xx ends the intake as failed (its detail kept for the status); a
        429/503 gives it back for a later try (the sweeper's, or the client's next commit)."""
        if not claimed.instances:  # its data key expired (or was lost) under it: nothing readable is left
            detail = "the series' instances expired or became unreadable before it was completed"
            self.intake.finish(claimed, None, detail)
            raise ApiError(410, "Gone", detail, code="series-expired")
        submission = Intake(
            self.settings,
            self.registry,
            self.queue,
            self.store,
            self.metrics,
            f"dicom-series-{uuid.uuid4().hex}",
            Principal(claimed.owner),
            self.slots,
        )
        upload = Upload(series_zip(claimed.instances), "series.zip", "application/zip")
        try:
            job_id = submission.submit(
                Inputs(upload, None), json.dumps({"model": claimed.model}), f"dicom-series:{claimed.generation}"
            )
        except ApiError as exc:
            if exc.status in RETRYABLE:
                self.intake.release(claimed, float(self.settings.retry_after))
            else:
                self.intake.finish(claimed, None, exc.detail)
                log.info("received series %s refused: %s", claimed.id, exc.code)
            raise
        except BaseException:
            self.intake.release(claimed, float(self.settings.retry_after))
            raise
        if self.queue.fetch_job(job_id) is None:
            # The Idempotency-Key's replay named a job an earlier completer (whose lease ran out) is
            # still creating, or failed to: ending the intake now could lose the series. Later.
            self.intake.release(claimed, float(self.settings.retry_after))
            raise retry_later(
                503, "Service Unavailable", "the series is being completed; try again", "series-completing",
                self.settings.retry_after,
            )  # fmt: skip
        self.intake.finish(claimed, job_id)
        log.info("received series %s (%d instances) queued as job %s", claimed.id, len(claimed.instances), job_id)
        return job_id

    def sweep(self) -> int:
        """Complete every series whose quiet period has passed; how many became jobs."""
        made = 0
        for iid in self.intake.due():
            claimed = self.intake.claim(iid)
            if isinstance(claimed, str):
                continue
            try:
                self.complete(claimed)
                made += 1
            except ApiError:
                pass  # kept as the series' outcome (or released for a later try)
            except RedisError:
                raise  # Redis away: the round ends (sweep_forever waits and tries again)
            except Exception:  # one series that fails oddly must not stall the others (released above)
                log.exception("received series %s could not be completed; tried again later", claimed.id)
        return made


def warn_unknown_route_models(settings: Settings, registry: Registry) -> list[str]:
    """Log (at start-up) the LRPSEG_DICOM_ROUTES models the registry does not hold: series routed to
    them are refused until the model is added. Returns those models."""
    unknown = []
    for route in settings.dicom_routes:
        try:
            registry.get(route.model)
        except RegistryError:
            unknown.append(route.model)
    if unknown:
        log.warning("LRPSEG_DICOM_ROUTES names models the registry does not hold: %s", ", ".join(unknown))
    return unknown


async def sweep_forever(jobs: SeriesJobs, interval: float) -> None:
    """The API's sweeper task: `jobs.sweep()` in a thread every `interval` s until cancelled."""
    while True:
        try:
            await asyncio.to_thread(jobs.sweep)
        except RedisError as exc:  # Redis away: try again next round (nothing is lost, see above)
            log.warning("series sweep: Redis unavailable (%s)", type(exc).__name__)
        except Exception:
            log.exception("series sweep failed; trying again")
        await asyncio.sleep(interval)


async def get_series_jobs(request: Request) -> SeriesJobs:
    value: SeriesJobs = request.app.state.series_jobs
    return value


SeriesJobsDep = Annotated[SeriesJobs, Depends(get_series_jobs)]
