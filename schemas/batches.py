"""Batch resources: many images in one request, each an ordinary job."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from schemas.callbacks import CallbackStatus


class BatchState(StrEnum):
    queued = "queued"  # no job has started yet
    started = "started"  # some job has started, not all have ended
    finished = "finished"  # every job finished
    partial = "partial"  # every job ended, some failed (or expired, or were deleted)
    failed = "failed"  # every job ended and none finished


class ItemState(StrEnum):
    queued = "queued"
    started = "started"
    finished = "finished"
    failed = "failed"
    canceled = "canceled"
    deleted = "deleted"  # the job was deleted on its own (DELETE /v1/jobs/{id})
    expired = "expired"  # its result is gone (failed jobs are kept failure_ttl, finished result_ttl)


class ItemLinks(BaseModel):
    self: str


class BatchItem(BaseModel):
    index: int = Field(description="position in the request (images parts in order, or zip entries by name)")
    name: str = Field(description="the file name in the request or the zip")
    ground_truth: str | None = Field(None, description="the ground-truth file matched to it, if any")
    job_id: str
    status: ItemState | None = None
    error: dict[str, str] | None = Field(None, description="{code, detail} of a failed job")
    links: ItemLinks


class BatchLinks(BaseModel):
    self: str
    archive: str


class BatchAccepted(BaseModel):
    """Body of a 202: every image is a queued job; poll `links.self` (also in `Location`)."""

    batch_id: str
    status: BatchState
    total: int
    items: list[BatchItem]
    links: BatchLinks


class BatchView(BaseModel):
    batch_id: str
    status: BatchState
    total: int
    counts: dict[str, int] = Field(description="jobs per item status")
    created_at: datetime
    expires_at: datetime = Field(description="results (and this batch) are gone after this: 410")
    items: list[BatchItem]
    callback: CallbackStatus | None = None
    links: BatchLinks
