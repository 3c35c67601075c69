"""Accepting a job: read the multipart parts, validate them against the model, store, enqueue.

Everything that can be wrong with the input is found here, before the job is queued, so a
bad request is a 4xx at once and never reaches (or takes down) a worker.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, UploadFile
from pydantic import ValidationError
from rq import Queue, Retry
from rq.job import Job

from lrpseg.io import DecodedImage, ImageDecodeError, decode_image
from lrpseg.pipeline import ParamsError, check_image, resolve_params
from lrpseg.registry import ModelInfo, Registry, RegistryError
from schemas.params import JobParams
from schemas.problems import FieldError
from service.deps import (
    MetricsDep,
    Principal,
    PrincipalDep,
    QueueDep,
    RegistryDep,
    RequestIdDep,
    SettingsDep,
    StoreDep,
)
from service.errors import ApiError, params_error
from service.metrics import ServiceMetrics
from service.settings import Settings
from service.store import Inputs, Store, Upload

TASK = "workers.tasks.process_job"
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
STATUS_TITLES = {400: "Bad image", 413: "Image too large", 415: "Unsupported image type", 422: "Invalid image"}


@dataclass(frozen=True)
class Intake:
    """Everything accepting a job needs, resolved once per request by FastAPI."""

    settings: Settings
    registry: Registry
    queue: Queue
    store: Store
    metrics: ServiceMetrics
    request_id: str
    principal: Principal

    def accept(
        self, image: UploadFile, ground_truth: UploadFile | None, params: str | None, idempotency_key: str | None
    ) -> str:
        """Validate, store and enqueue; the job id (an earlier one for an Idempotency-Key replay)."""
        settings = self.settings
        try:
            parsed = parse_params(params)
            upload = read_upload(image, "image", settings.max_upload_bytes)
            truth = read_upload(ground_truth, "ground_truth", settings.max_upload_bytes)
            assert upload is not None
            inputs = Inputs(upload, truth)
            job_id = new_job_id()
            if idempotency_key is not None:
                earlier = claim_idempotency_key(
                    self.store,
                    self.principal,
                    idempotency_key,
                    fingerprint(params, inputs),
                    job_id,
                    settings.result_ttl,
                )
                if earlier is not None:
                    return earlier  # a replay: the first request's job, whatever state it is in
            try:
                check_capacity(self.queue, settings)
                info, resolved = validate(self.registry, settings, parsed, upload, truth)
            except ApiError:
                if idempotency_key is not None:  # nothing was created under the key: free it
                    self.store.release_idempotency_key(self.principal.id, idempotency_key)
                raise
        except ApiError as exc:
            self.metrics.rejected.labels(exc.code).inc()
            raise
        enqueue(
            self.queue,
            self.store,
            settings,
            info,
            resolved,
            inputs,
            job_id=job_id,
            request_id=self.request_id,
            principal=self.principal,
        )
        self.metrics.submitted.labels(info.id).inc()
        return job_id


async def get_intake(
    settings: SettingsDep,
    registry: RegistryDep,
    queue: QueueDep,
    store: StoreDep,
    metrics: MetricsDep,
    request_id: RequestIdDep,
    principal: PrincipalDep,
) -> Intake:
    return Intake(settings, registry, queue, store, metrics, request_id, principal)


IntakeDep = Annotated[Intake, Depends(get_intake)]


def parse_params(raw: str | None) -> JobParams:
    try:
        return JobParams.model_validate_json(raw) if raw and raw.strip() else JobParams()
    except ValidationError as exc:
        raise params_error(exc) from None


def read_upload(file: UploadFile | None, field: str, limit: int) -> Upload | None:
    if file is None:
        return None
    if file.size is not None and file.size > limit:
        raise ApiError(413, "Payload too large", f"{field} is {file.size} bytes; the limit is {limit}")
    data = file.file.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, "Payload too large", f"{field} exceeds {limit} bytes")
    if not data:
        raise _invalid(field, "the file is empty")
    return Upload(data, file.filename, file.content_type)


def _invalid(field: str, message: str, status: int = 422, code: str = "invalid-input") -> ApiError:
    return ApiError(
        status,
        STATUS_TITLES.get(status, "Invalid input"),
        f"{field}: {message}",
        code=code,
        errors=[FieldError(field=field, message=message)],
    )


def decode(upload: Upload, field: str, settings: Settings, frame: int | None) -> DecodedImage:
    try:
        return decode_image(
            upload.data,
            filename=upload.filename,
            content_type=upload.content_type,
            max_pixels=settings.max_pixels,
            max_side=settings.max_side,
            frame=frame,
        )
    except ImageDecodeError as exc:
        raise _invalid(field, exc.detail, exc.status, exc.code) from None


def resolve_model(registry: Registry, params: JobParams) -> ModelInfo:
    ref = params.model or registry.default_id
    try:
        return registry.get(ref)
    except RegistryError as exc:
        raise _invalid("params.model", str(exc)) from None


def validate(
    registry: Registry, settings: Settings, params: JobParams, image: Upload, gt: Upload | None
) -> tuple[ModelInfo, JobParams]:
    """The model, and the params with defaults resolved; ApiError on anything wrong."""
    info = resolve_model(registry, params)
    try:
        params = resolve_params(params, info)
        decoded = decode(image, "image", settings, params.frame)
        check_image(params, info, decoded.channels, decoded.height, decoded.width)
        if gt is not None:
            truth = decode(gt, "ground_truth", settings, None)
            if (truth.height, truth.width) != (decoded.height, decoded.width):
                raise ParamsError(
                    "ground_truth",
                    f"ground truth is {truth.width}x{truth.height}; the image is {decoded.width}x{decoded.height}",
                )
    except ParamsError as exc:
        raise _invalid(exc.field, str(exc)) from None
    return info, params


def check_capacity(queue: Queue, settings: Settings) -> None:
    if queue.count >= settings.max_queue:
        raise ApiError(
            503,
            "Queue full",
            f"{queue.count} jobs are waiting; try again later",
            code="queue-full",
            headers={"Retry-After": str(settings.retry_after)},
        )


def new_job_id() -> str:
    return uuid.uuid4().hex


def fingerprint(params: str | None, inputs: Inputs) -> str:
    """What makes two submissions "the same" for Idempotency-Key: the params text and the bytes."""
    digest = hashlib.sha256()
    for part in (params or "").encode(), inputs.image.data, inputs.ground_truth.data if inputs.ground_truth else b"":
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def claim_idempotency_key(
    store: Store, principal: Principal, key: str, fingerprint_: str, job_id: str, ttl: int
) -> str | None:
    """None if this request owns the key now; the earlier job's id for a replay; 422 for a clash."""
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise _invalid("Idempotency-Key", "must be 1-128 characters of letters, digits and ._:-")
    earlier = store.claim_idempotency_key(principal.id, key, f"{fingerprint_}:{job_id}", ttl)
    if earlier is None:
        return None
    earlier_fingerprint, _, earlier_job = earlier.partition(":")
    if earlier_fingerprint != fingerprint_:
        raise ApiError(
            422,
            "Idempotency-Key reused",
            "this Idempotency-Key was used with a different payload",
            code="idempotency-key-reused",
        )
    return earlier_job


def enqueue(
    queue: Queue,
    store: Store,
    settings: Settings,
    info: ModelInfo,
    params: JobParams,
    inputs: Inputs,
    *,
    job_id: str,
    request_id: str,
    principal: Principal,
) -> Job:
    store.create_record(job_id, principal.id, settings.tombstone_ttl)
    store.put_inputs(job_id, inputs, ttl=settings.result_ttl)
    return queue.enqueue_call(
        TASK,
        args=(job_id,),
        kwargs={"params": params.model_dump(mode="json")},
        job_id=job_id,
        timeout=settings.job_timeout,
        result_ttl=settings.result_ttl,
        failure_ttl=settings.failure_ttl,
        retry=Retry(max=settings.job_retries) if settings.job_retries else None,
        description=f"lrpseg {info.id}",
        meta={"request_id": request_id, "owner": principal.id, "model": info.id, "stage": "queued", "fraction": 0.0},
    )
