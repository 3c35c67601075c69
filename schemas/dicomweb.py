"""A series received by STOW-RS or C-STORE, as GET /dicomweb/series/{uid} and its commit return it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class SeriesLinks(BaseModel):
    self: str
    job: str | None = Field(None, description="the series' job (GET it for status, result and artifacts)")


class SeriesStatus(BaseModel):
    series_uid: str
    study_uid: str
    state: Literal["receiving", "completing", "completed", "failed"] = Field(
        description="receiving: instances are being stored; completing: its job is being created; "
        "completed: the job exists (job_id); failed: the series could not become a job (detail)"
    )
    model: str
    instances: int = Field(ge=0)
    quiet_at: float | None = Field(
        None, description="receiving: Unix time at which the series completes if no further instance arrives"
    )
    job_id: str | None = None
    job_status: str | None = Field(None, description="the job's status (queued, started, finished, failed...)")
    detail: str | None = Field(None, description="failed: why the series did not become a job")
    links: SeriesLinks
