"""Job resources as the API returns them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from schemas.callbacks import CallbackStatus, PacsDelivery
from schemas.results import JobResult


class JobState(StrEnum):
    queued = "queued"
    started = "started"
    finished = "finished"
    failed = "failed"
    canceled = "canceled"


class Progress(BaseModel):
    stage: str = Field(
        description="queued, requeued (its worker died; waiting for another), decode, forward, lrp, masks, "
        "metrics, render, store, done, failed"
    )
    fraction: float = Field(ge=0.0, le=1.0)


class JobError(BaseModel):
    code: str = Field(
        description="bad_input, inputs_missing, source_unavailable (a pull job's PACS could not be asked), "
        "timeout, out_of_memory, worker_lost (the worker died and no retry was left), cancelled, internal"
    )
    detail: str


class JobLinks(BaseModel):
    self: str
    artifacts: dict[str, str] | None = None


class JobAccepted(BaseModel):
    """Body of a 202: the job is queued; poll `links.self` (also in `Location`)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "job_id": "8f14e45fceea467a9b2c1d3e5f607182",
                    "status": "queued",
                    "position": 0,
                    "links": {"self": "http://localhost:8000/v1/jobs/8f14e45fceea467a9b2c1d3e5f607182"},
                }
            ]
        }
    )

    job_id: str
    status: JobState
    position: int | None = Field(None, description="0 = next to run")
    links: JobLinks


class JobView(BaseModel):
    """A job: status, progress while it runs, the result or the error when it ended."""

    model_config = ConfigDict(protected_namespaces=())

    job_id: str
    status: JobState
    model: str | None = None
    request_id: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    position: int | None = Field(None, description="place in the queue while queued (0 = next)")
    progress: Progress | None = None
    result: JobResult | None = None
    error: JobError | None = None
    callback: CallbackStatus | None = Field(None, description="the completion callback, if callback_url was sent")
    deliveries: list[PacsDelivery] | None = Field(
        None, description="the DICOM results sent to PACS destinations (params.send, LRPSEG_DICOMWEB_DESTINATION)"
    )
    batch_id: str | None = Field(None, description="the batch this job belongs to (POST /v1/batches)")
    links: JobLinks
