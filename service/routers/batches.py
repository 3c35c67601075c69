"""/v1/batches: many images in one request, each an ordinary job; status, one zip, delete."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Request, Response, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse

from core.batch_records import Batches, BatchRecord
from core.deliveries import Deliveries, new_delivery_id
from schemas.batches import BatchAccepted, BatchItem, BatchLinks, BatchState, BatchView, ItemLinks
from service import batches as batch_ops
from service.deps import PrincipalDep, RedisDep, SettingsDep, StoreDep
from service.errors import ApiError, retry_later
from service.routers.jobs import PROBLEM, SUBMIT_ERRORS, CallbackUrl, ParamsPart, _artifact_url, _self_url
from service.single_parts import BATCH_PARTS, single_parts
from service.submission import IntakeDep

router = APIRouter(prefix="/v1", tags=["batches"])

ImagesPart = Annotated[
    list[UploadFile] | None,
    File(description="the images, one part each (NAME.gt.EXT parts: the ground truth of NAME.*)"),
]
ArchivePart = Annotated[
    UploadFile | None,
    File(description="instead of `images`: one zip of images (and NAME.gt.EXT ground truths)"),
]
BATCH_ERRORS: dict[int | str, dict[str, Any]] = {
    **SUBMIT_ERRORS,
    413: {**PROBLEM, "description": "upload, image, archive or image count over its limit"},
    422: {**PROBLEM, "description": "invalid params, callback or image (the body names index and file name)"},
}


def _batch_url(request: Request, batch_id: str) -> str:
    return str(request.url_for("get_batch", batch_id=batch_id))


def _archive_url(request: Request, batch_id: str) -> str:
    return str(request.url_for("get_batch_archive", batch_id=batch_id))


@router.post(
    "/batches",
    status_code=202,
    response_model=BatchAccepted,
    responses=BATCH_ERRORS,
    summary="Submit many images (parts or a zip) with one params; 202 with the batch's URL in Location",
    dependencies=[Depends(single_parts(BATCH_PARTS))],
)
def submit_batch(
    request: Request,
    intake: IntakeDep,
    images: ImagesPart = None,
    archive: ArchivePart = None,
    params: ParamsPart = None,
    callback_url: CallbackUrl = None,
) -> JSONResponse:
    settings = intake.settings
    if (not images) == (archive is None):
        raise ApiError(422, "Invalid batch", "send either `images` parts or one `archive` zip", code="invalid-batch")
    callback = intake.check_callback_url(callback_url)
    items = batch_ops.read_parts(images, settings) if images else batch_ops.read_archive(archive, settings)  # type: ignore[arg-type]
    prepared = intake.check_many(items, params)

    batch_id = uuid.uuid4().hex
    now = time.time()
    record = BatchRecord(
        batch_id=batch_id,
        owner=intake.principal.id,
        created=now,
        expires=now + settings.result_ttl,
        state="live",
        items=[
            {
                "index": index,
                "name": p.item.name,
                "ground_truth": p.item.inputs.ground_truth.filename if p.item.inputs.ground_truth else None,
                "job_id": p.job_id,
            }
            for index, p in enumerate(prepared)
        ],
        callback_url=callback,
        delivery_id=new_delivery_id() if callback else None,
        self_url=_batch_url(request, batch_id),
        archive_url=_archive_url(request, batch_id),
    )
    Batches(intake.store.connection, settings.key_prefix).create(record, settings.tombstone_ttl)
    intake.enqueue_many(prepared, batch_id=batch_id, hooks=callback is not None)
    intake.require_replicas()

    job_url = _self_url(request)
    body = BatchAccepted(
        batch_id=batch_id,
        status=BatchState.queued,
        total=len(prepared),
        items=[BatchItem(**item, links=ItemLinks(self=job_url(item["job_id"]))) for item in record.items],
        links=BatchLinks(self=record.self_url, archive=record.archive_url),
    )
    headers = {"Location": record.self_url, "Retry-After": str(settings.retry_after)}
    return JSONResponse(body.model_dump(mode="json"), status_code=202, headers=headers)


def _view(
    request: Request, batch_id: str, redis: RedisDep, store: StoreDep, principal: PrincipalDep, settings: SettingsDep
) -> tuple[batch_ops.BatchJobs, BatchView]:
    """The batch's items with their jobs, and its view (404/410 as `fetch_batch`)."""
    record = batch_ops.fetch_batch(Batches(redis, store.prefix), batch_id, principal)
    loaded = batch_ops.load(record, redis, store, _self_url(request))
    return loaded, batch_ops.batch_view(loaded, Deliveries(redis, store.prefix), settings.callback_attempts)


@router.get("/batches/{batch_id}", response_model=BatchView, responses={404: PROBLEM, 410: PROBLEM}, name="get_batch")
def get_batch(
    request: Request,
    batch_id: str,
    redis: RedisDep,
    store: StoreDep,
    principal: PrincipalDep,
    settings: SettingsDep,
) -> JSONResponse:
    _, view = _view(request, batch_id, redis, store, principal, settings)
    headers = None if batch_ops.ended(view) else {"Retry-After": str(settings.retry_after)}
    return JSONResponse(view.model_dump(mode="json"), headers=headers)


@router.get(
    "/batches/{batch_id}/archive",
    name="get_batch_archive",
    response_class=Response,
    responses={
        200: {"content": {"application/zip": {}}, "description": "batch.json + one folder per image"},
        404: PROBLEM,
        409: PROBLEM,
        410: PROBLEM,
    },
    summary="A zip of every job's result.json and artifacts; 409 until every job has ended",
)
def get_batch_archive(
    request: Request,
    batch_id: str,
    redis: RedisDep,
    store: StoreDep,
    principal: PrincipalDep,
    settings: SettingsDep,
) -> StreamingResponse:
    loaded, view = _view(request, batch_id, redis, store, principal, settings)
    if not batch_ops.ended(view):
        running = sum(view.counts.get(s, 0) for s in ("queued", "started"))
        raise retry_later(
            409,
            "Not ready",
            f"batch {batch_id}: {running} of {view.total} jobs have not ended",
            "batch-not-ended",
            settings.retry_after,
        )
    chunks = batch_ops.archive_chunks(loaded, view, store, _artifact_url(request))  # made while it is sent
    headers = {"Content-Disposition": f'attachment; filename="batch-{batch_id}.zip"', "Cache-Control": "private"}
    return StreamingResponse(chunks, media_type="application/zip", headers=headers)


@router.delete("/batches/{batch_id}", status_code=204, responses={404: PROBLEM, 410: PROBLEM})
def delete_batch(batch_id: str, redis: RedisDep, store: StoreDep, principal: PrincipalDep) -> Response:
    """Delete the batch and every job in it (inputs, artifacts, results); running jobs stop at their next stage."""
    record = batch_ops.fetch_batch(Batches(redis, store.prefix), batch_id, principal)
    batch_ops.delete_batch(record, Batches(redis, store.prefix), store, redis)
    return Response(status_code=204)
