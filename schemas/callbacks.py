"""Delivery status as job and batch views show it (callbacks and DICOM results sent to a PACS),
and the bodies that are POSTed."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class CallbackState(StrEnum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"


class CallbackStatus(BaseModel):
    """Where the completion callback stands: pending until a 2xx answer, failed after the last attempt."""

    delivery_id: str = Field(description="also sent as X-Lrpseg-Delivery: the same on every retry (dedupe on it)")
    url: str
    status: CallbackState
    attempts: int = Field(ge=0, description="attempts started so far")
    max_attempts: int | None = None
    last_status_code: int | None = Field(None, description="HTTP status of the last answer; null if none came")
    last_error: str | None = Field(None, description="why the last attempt failed (timeout, connection, HTTP 500)")
    next_attempt_at: datetime | None = None
    last_attempt_at: datetime | None = None
    delivered_at: datetime | None = None


class PacsDeliveryState(StrEnum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"
    skipped = "skipped"  # nothing to send: the job failed, or made no DICOM output (a PNG input)


class PacsDelivery(BaseModel):
    """Where sending the job's DICOM results (SEG + relevance map) to one destination stands."""

    kind: str = Field(description="dicomweb (STOW-RS) or dimse (C-STORE)")
    target: str = Field(description="the DICOMweb root URL, or AET@host:port")
    delivery_id: str
    status: PacsDeliveryState
    attempts: int = Field(ge=0)
    max_attempts: int | None = None
    last_status_code: int | None = Field(None, description="HTTP status of the last STOW-RS answer")
    last_error: str | None = Field(None, description="why the last attempt failed, or why nothing was sent")
    next_attempt_at: datetime | None = None
    last_attempt_at: datetime | None = None
    delivered_at: datetime | None = None


class JobEventLinks(BaseModel):
    self: str


class BatchEventLinks(BaseModel):
    self: str
    archive: str


class JobEndedEvent(BaseModel):
    """Body of a `job.ended` callback (X-Lrpseg-Event: job.ended)."""

    event: str = "job.ended"
    delivery_id: str
    job_id: str
    batch_id: str | None = None
    status: str = Field(description="finished or failed")
    model: str | None = None
    request_id: str | None = None
    error: dict[str, str] | None = Field(None, description="{code, detail} of a failed job")
    links: JobEventLinks = Field(description="self: the job (GET it for the result and artifact links)")


class BatchEndedEvent(BaseModel):
    """Body of a `batch.ended` callback: every job of the batch has ended."""

    event: str = "batch.ended"
    delivery_id: str
    batch_id: str
    status: str = Field(description="finished (all jobs finished), partial (some failed) or failed (all failed)")
    total: int
    counts: dict[str, int]
    links: BatchEventLinks = Field(description="self: the batch; archive: the zip of all results")
