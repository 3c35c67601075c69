"""/v1/jobs and /v1/explain: submit, poll, fetch artifacts, delete."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Header, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse, RedirectResponse, StreamingResponse
from rq import Queue

from core import batch_records, recovery
from core.settings import Settings
from schemas.jobs import JobAccepted, JobLinks, JobState, JobView
from schemas.params import Artifact
from schemas.problems import Problem
from service import views
from service.deps import JobSlotsDep, PrincipalDep, QueueDep, RedisDep, SettingsDep, StatsDep, StoreDep
from service.errors import ApiError, retry_later
from service.single_parts import JOB_PARTS, single_parts
from service.submission import IntakeDep

router = APIRouter(prefix="/v1", tags=["jobs"])

PROBLEM = {"model": Problem, "content": {"application/problem+json": {}}}
SUBMIT_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {**PROBLEM, "description": d}
    for s, d in {
        400: "the image cannot be decoded",
        413: "upload or image too large",
        415: "unsupported image type",
        422: "invalid params, image or ground truth (the body names the field)",
        503: "queue full (Retry-After)",
    }.items()
}
MEDIA_TYPES = {".png": "image/png", ".npy": "application/octet-stream", ".dcm": "application/dicom"}

ImagePart = Annotated[
    UploadFile | None,
    File(description="PNG, JPEG, TIFF, .npy or DICOM (or a zip of a DICOM series); omit with params.source"),
]
TruthPart = Annotated[UploadFile | None, File(description="optional ground-truth mask of the target class, same size")]
ParamsPart = Annotated[
    str | None,
    Form(
        description="JSON of JobParams (see the schema); omitted or {} = defaults",
        examples=['{"target": {"kind": "class", "cls": "defect"}, "masks": ["gmm", "bmm"]}'],
        json_schema_extra={
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/JobParams"},
        },
    ),
]
CallbackUrl = Annotated[
    str | None,
    Form(
        description="optional http(s) URL POSTed (signed, retried) when the job ends; see docs/interop.md",
        examples=["https://ris.example.org/hooks/lrpseg"],
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Header(description="same key + same payload -> the same job; with another payload -> 422"),
]


def _self_url(request: Request) -> views.UrlFor:
    return lambda job_id: str(request.url_for("get_job", job_id=job_id))


def _artifact_url(request: Request) -> views.ArtifactUrlFor:
    base = str(request.url_for("get_artifact", job_id="JOB", name="NAME"))
    return lambda job_id, name: base.replace("JOB", job_id, 1).replace("NAME", name, 1)


def _view_response(view: JobView, headers: dict[str, str] | None = None) -> JSONResponse:
    """The view as JSON, without FastAPI validating the already validated model a second time."""
    return JSONResponse(view.model_dump(mode="json"), headers=headers)


def _accepted_response(request: Request, queue: Queue, settings: Settings, job_id: str) -> JSONResponse:
    url = _self_url(request)(job_id)
    body = JobAccepted(
        job_id=job_id, status=JobState.queued, position=queue.get_job_position(job_id), links=JobLinks(self=url)
    )
    headers = {"Location": url, "Retry-After": str(settings.retry_after)}
    return JSONResponse(body.model_dump(mode="json"), status_code=202, headers=headers)


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobAccepted,
    responses=SUBMIT_ERRORS,
    summary="Submit an image; 202 with the job's URL in Location",
    dependencies=[Depends(single_parts(JOB_PARTS))],
)
def submit_job(
    request: Request,
    intake: IntakeDep,
    image: ImagePart = None,
    ground_truth: TruthPart = None,
    params: ParamsPart = None,
    idempotency_key: IdempotencyKey = None,
    callback_url: CallbackUrl = None,
) -> JSONResponse:
    job_id = intake.accept(image, ground_truth, params, idempotency_key, callback_url, _self_url(request))
    return _accepted_response(request, intake.queue, intake.settings, job_id)


@router.post(
    "/explain",
    response_model=JobView,
    responses={202: {"model": JobAccepted, "description": "still running"}, **SUBMIT_ERRORS},
    summary="Submit and wait up to `wait` seconds: the ended job (200), else 202 as /v1/jobs",
    dependencies=[Depends(single_parts(JOB_PARTS))],
)
def explain(
    request: Request,
    intake: IntakeDep,
    redis: RedisDep,
    image: ImagePart = None,
    ground_truth: TruthPart = None,
    params: ParamsPart = None,
    idempotency_key: IdempotencyKey = None,
    callback_url: CallbackUrl = None,
    wait: Annotated[float, Query(ge=0, description="seconds to wait for the result")] = 10.0,
) -> Any:
    settings = intake.settings
    if wait > settings.max_wait:
        raise ApiError(422, "Invalid request", f"wait must be <= {settings.max_wait:g} seconds", code="invalid-wait")
    job_id = intake.accept(image, ground_truth, params, idempotency_key, callback_url, _self_url(request))
    views.wait_for_end(redis, job_id, wait)
    job = views.fetch_job(redis, intake.store, job_id, intake.principal)
    view = views.job_view(job, intake.queue, _self_url(request), _artifact_url(request), store=intake.store)
    if view.status in (JobState.queued, JobState.started):
        return _accepted_response(request, intake.queue, settings, job_id)
    return _view_response(view)


@router.get("/jobs/{job_id}", response_model=JobView, responses={404: PROBLEM, 410: PROBLEM}, name="get_job")
def get_job(
    request: Request,
    job_id: str,
    redis: RedisDep,
    queue: QueueDep,
    store: StoreDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    stats: StatsDep,
) -> JSONResponse:
    job = views.fetch_job(redis, store, job_id, principal)
    # A started job whose worker stopped renewing its claim is resolved here and now, even
    # if no worker is left to run the clean-up (docs/operations.md).
    job = recovery.reap_if_abandoned(job, recovery.Reaper(queue, store, stats, settings.job_lost_after))
    view = views.job_view(job, queue, _self_url(request), _artifact_url(request), store=store)
    running = view.status in (JobState.queued, JobState.started)
    return _view_response(view, {"Retry-After": str(settings.retry_after)} if running else None)


@router.get(
    "/jobs/{job_id}/artifacts/{name}",
    name="get_artifact",
    response_class=Response,
    responses={200: {"content": {t: {} for t in MEDIA_TYPES.values()}}, 404: PROBLEM, 409: PROBLEM, 410: PROBLEM},
)
def get_artifact(
    job_id: str,
    name: str,
    redis: RedisDep,
    store: StoreDep,
    principal: PrincipalDep,
    settings: SettingsDep,
) -> Response:
    job = views.fetch_job(redis, store, job_id, principal)
    if name not in {a.value for a in Artifact}:
        raise ApiError(404, "Not found", f"no artifact named {name!r}", code="artifact-not-found")
    state = views.state_of(job)
    if state is not JobState.finished:
        raise retry_later(409, "Not ready", f"job {job_id} is {state.value}", "job-not-finished", settings.retry_after)
    media_type = MEDIA_TYPES[name[name.rindex(".") :]]
    if settings.artifact_redirect and name in store.artifact_names(job_id):
        url = store.artifacts.url(job_id, name, settings.artifact_url_ttl, media_type)
        if url is not None:  # the caller was authorised here; the object store serves the bytes
            return RedirectResponse(url, status_code=307, headers={"Cache-Control": "private, no-store"})
    blob = store.stream_artifact(job_id, name)
    if blob is None:
        raise ApiError(404, "Not found", f"job {job_id} has no artifact {name!r}", code="artifact-not-found")
    headers = {
        "Content-Disposition": f'inline; filename="{job_id}-{name}"',
        "Cache-Control": "private, max-age=3600",
        "Content-Length": str(blob.size),
    }
    return StreamingResponse(blob.chunks, media_type=media_type, headers=headers)


@router.delete("/jobs/{job_id}", status_code=204, responses={404: PROBLEM, 410: PROBLEM})
def delete_job(job_id: str, redis: RedisDep, store: StoreDep, principal: PrincipalDep, slots: JobSlotsDep) -> Response:
    """Delete the job, its input and artifacts. A running job stops at its next stage."""
    job = views.fetch_job(redis, store, job_id, principal)
    store.mark_deleted(job_id)
    state = views.state_of(job)
    if state is not JobState.started:
        job.delete()  # a started job is removed by its worker when it notices
        slots.release(principal.id, job_id)  # a started one holds its slot until it stops
        if state not in (JobState.finished, JobState.failed):  # it never ran, so no end hook will
            batch_records.job_deleted(job, redis)
    return Response(status_code=204)
