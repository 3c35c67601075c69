"""DICOMweb in: STOW-RS (POST /dicomweb/studies[/{study}]) and the received series' status and commit.

Authenticated and rate limited exactly like /v1 (the same dependency); the body size limit is the
app's (BodyLimit). Stored instances wait in the series intake (pacs.intake) until their series is
quiet for LRPSEG_SERIES_QUIET_SECONDS or is committed here; then it becomes one job.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from rq import Queue
from rq.exceptions import InvalidJobOperation

from lrpseg.registry import Registry
from pacs.intake import IntakeStatus
from schemas.dicomweb import SeriesLinks, SeriesStatus
from schemas.problems import Problem
from service.deps import PrincipalDep, QueueDep, RegistryDep
from service.errors import ApiError
from service.series_jobs import SeriesJobs, SeriesJobsDep
from service.stow import DICOM_JSON, boundary_of, response_body, store_parts

router = APIRouter(prefix="/dicomweb", tags=["dicomweb"])

PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}
STOW_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "every instance stored", "content": {DICOM_JSON: {}}},
    202: {"description": "some instances stored, some failed (FailedSOPSequence)", "content": {DICOM_JSON: {}}},
    409: {"description": "no instance could be stored (FailedSOPSequence says why)", "content": {DICOM_JSON: {}}},
    400: {**PROBLEM, "description": "malformed multipart body"},
    413: {**PROBLEM, "description": "body too large"},
    415: {**PROBLEM, "description": 'not multipart/related; type="application/dicom"'},
}
ModelQuery = Annotated[
    str | None,
    Query(max_length=200, description="the model for the series (name@version); default: LRPSEG_DICOM_ROUTES"),
]
SeriesUid = Annotated[str, Path(max_length=64, pattern=r"^[0-9]+(\.[0-9]+)*$")]


async def _stow(
    request: Request, principal: str, jobs: SeriesJobs, registry: Registry, model: str | None, study: str | None
) -> JSONResponse:
    boundary = boundary_of(request.headers.get("content-type"))
    body = await request.body()
    outcomes = await run_in_threadpool(store_parts, jobs.intake, registry, principal, body, boundary, model, study)
    status, content = response_body(outcomes)
    series = sorted({o.header.series for o in outcomes if o.header is not None and o.refused is None})
    links = ", ".join(f'<{request.url_for("get_series", series_uid=uid)}>; rel="related"' for uid in series)
    return JSONResponse(content, status_code=status, media_type=DICOM_JSON, headers={"Link": links} if links else None)


@router.post("/studies", responses=STOW_RESPONSES, summary="Store instances (STOW-RS)")
async def store_instances(
    request: Request, principal: PrincipalDep, jobs: SeriesJobsDep, registry: RegistryDep, model: ModelQuery = None
) -> JSONResponse:
    """The body: DICOM Part 10 instances, one per part, as `multipart/related; type="application/dicom"`
    (read by this handler; docs/pacs.md). Each series becomes a job when quiet or committed."""
    return await _stow(request, principal.id, jobs, registry, model, None)


@router.post(
    "/studies/{study}",
    responses=STOW_RESPONSES,
    summary="Store instances of one study (STOW-RS)",
)
async def store_study_instances(
    request: Request,
    study: Annotated[str, Path(max_length=64)],
    principal: PrincipalDep,
    jobs: SeriesJobsDep,
    registry: RegistryDep,
    model: ModelQuery = None,
) -> JSONResponse:
    """As POST /dicomweb/studies; instances of another study than `study` fail (A900)."""
    return await _stow(request, principal.id, jobs, registry, model, study)


def _view(request: Request, queue: Queue, status: IntakeStatus) -> SeriesStatus:
    job_url = str(request.url_for("get_job", job_id=status.job_id)) if status.job_id else None
    job_status = None
    if status.job_id:
        job = queue.fetch_job(status.job_id)
        try:
            job_status = str(job.get_status().value) if job is not None else "expired"
        except InvalidJobOperation:  # its hash expired or was deleted since the fetch
            job_status = "expired"
    return SeriesStatus(
        series_uid=status.series,
        study_uid=status.study,
        state=status.state,  # type: ignore[arg-type]
        model=status.model,
        instances=status.instances,
        quiet_at=status.quiet_at,
        job_id=status.job_id,
        job_status=job_status,
        detail=status.detail,
        links=SeriesLinks(self=str(request.url_for("get_series", series_uid=status.series)), job=job_url),
    )


def _not_found() -> ApiError:
    return ApiError(404, "Not found", "no instances of this series were received with this key", code="not-found")


@router.get("/series/{series_uid}", response_model=SeriesStatus, responses={404: PROBLEM})
def get_series(
    request: Request, series_uid: SeriesUid, principal: PrincipalDep, jobs: SeriesJobsDep, queue: QueueDep
) -> SeriesStatus:
    """A received series: still receiving, or the job it became (or why it did not)."""
    status = jobs.intake.status(principal.id, series_uid)
    if status is None:
        raise _not_found()
    return _view(request, queue, status)


@router.post(
    "/series/{series_uid}/commit",
    status_code=202,
    response_model=SeriesStatus,
    responses={200: {"description": "the series was a job already"}, 404: PROBLEM, 409: PROBLEM, 422: PROBLEM},
)
def commit_series(
    request: Request, series_uid: SeriesUid, principal: PrincipalDep, jobs: SeriesJobsDep, queue: QueueDep
) -> JSONResponse:
    """Complete the series now (without waiting for its quiet period): 202 with its job (Location)."""
    claimed = jobs.intake.claim_series(principal.id, series_uid)
    if isinstance(claimed, str):
        status = jobs.intake.status(principal.id, series_uid)
        if claimed == "busy":
            raise ApiError(
                409, "Conflict", "the series is being completed; try again", code="busy", headers={"Retry-After": "1"}
            )
        if status is not None and status.state == "completed":
            return JSONResponse(_view(request, queue, status).model_dump(mode="json"), status_code=200)
        if status is not None and status.state == "failed":
            raise ApiError(
                422, "Invalid input", f"the series did not become a job: {status.detail}", code="series-failed"
            )
        raise _not_found()
    job_id = jobs.complete(claimed)
    done = IntakeStatus("completed", claimed.study, claimed.series, claimed.model, len(claimed.instances), job_id)
    view = _view(request, queue, done)
    return JSONResponse(view.model_dump(mode="json"), status_code=202, headers={"Location": view.links.job or ""})
