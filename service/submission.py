"""Accepting a job: read the multipart parts, validate them against the model, store, enqueue.

Everything that can be wrong with the input is found here, before the job is queued, so a
bad request is a 4xx at once and never reaches (or takes down) a worker.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, UploadFile
from pydantic import ValidationError
from redis.exceptions import RedisError
from rq import Callback, Queue, Retry
from rq.job import Job

from core.claims import Claims
from core.connect import wait_for_replicas
from core.deliveries import new_delivery_id
from core.dicom_send import send_meta
from core.meta import (
    BATCH_ID,
    BATCH_KEY,
    CALLBACK,
    FRACTION,
    HOOKS,
    MODEL,
    ON_FAILURE,
    ON_SUCCESS,
    OWNER,
    REQUEST_ID,
    STAGE,
    TASK,
)
from core.pacs import SEND
from core.settings import Settings
from core.stats import Stats
from core.store import Inputs, Store, Upload
from lrpseg.inputs import (
    DecodeLimits,
    InputError,
    RawInput,
    ResolvedParams,
    decode_input,
    prepare_inputs,
    resolve_params,
)
from lrpseg.io import DecodedImage
from lrpseg.pipeline import batch_key
from lrpseg.registry import ModelInfo, Registry, RegistryError
from schemas.params import JobParams
from schemas.problems import FieldError
from service.callback_urls import check_callback_url
from service.deps import (
    JobSlotsDep,
    MetricsDep,
    Principal,
    PrincipalDep,
    QueueDep,
    RegistryDep,
    RequestIdDep,
    SettingsDep,
    StoreDep,
)
from service.errors import ApiError, params_error, retry_later
from service.layer_check import check_layer_names
from service.pacs_params import check_pacs_params, check_pull_upload, pull_upload
from service.precision_check import check_precision
from service.prometheus import ServiceMetrics
from service.ratelimit import JobSlots

CALLBACK_HOOK_TIMEOUT = 10  # s: the hooks only write one Redis record
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# titles of errors about the uploaded files (a params field's error is "Invalid parameters")
STATUS_TITLES = {400: "Bad image", 413: "Image too large", 415: "Unsupported image type", 422: "Invalid input"}


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
    slots: JobSlots | None = None  # per-key job limit (None: unlimited)

    def accept(
        self,
        image: UploadFile | None,
        ground_truth: UploadFile | None,
        params: str | None,
        idempotency_key: str | None,
        callback_url: str | None = None,
        job_url: Callable[[str], str] | None = None,
    ) -> str:
        """Validate, store and enqueue; the job id (an earlier one for an Idempotency-Key replay).
        With `callback_url`, the job's end is POSTed there (`job_url` gives the link it carries)."""
        settings = self.settings
        try:
            self.check_callback_url(callback_url)  # in this order before the uploads are read (again in submit)
            parsed = parse_params(params)
            upload = read_upload(image, "image", settings.max_upload_bytes) or pull_upload(parsed)  # pull mode
            truth = read_upload(ground_truth, "ground_truth", settings.max_upload_bytes)
        except ApiError as exc:
            self.metrics.rejected.labels(exc.code).inc()
            raise
        return self.submit(Inputs(upload, truth), params, idempotency_key, callback_url, job_url)

    def submit(
        self,
        inputs: Inputs,
        params: str | None,
        idempotency_key: str | None,
        callback_url: str | None = None,
        job_url: Callable[[str], str] | None = None,
    ) -> str:
        """`accept` for uploads already read (a received DICOM series, service/series_jobs.py)."""
        settings = self.settings
        upload, truth = inputs.image, inputs.ground_truth
        try:
            callback_url = self.check_callback_url(callback_url)
            parsed = parse_params(params)
            job_id = new_job_id()
            if idempotency_key is not None:
                earlier = claim_idempotency_key(
                    self.store,
                    self.principal,
                    idempotency_key,
                    fingerprint(params if callback_url is None else f"{params or ''}\0{callback_url}", inputs),
                    job_id,
                    settings.result_ttl,
                )
                if earlier is not None:  # a replay: the first request's job, whatever state it is in,
                    self.require_replicas(count=False)  # confirmed like a new one (counted below if not)
                    return earlier
            try:
                check_capacity(self.queue, settings, [job_id])
                try:
                    checked = check_submission(self.registry, settings, parsed, upload, truth, self.stats())
                    info, resolved = checked.info, checked.params
                    reserve_slot(self.slots, self.principal, job_id, settings)
                except ApiError:
                    release_capacity(self.queue, [job_id])
                    raise
            except ApiError:
                if idempotency_key is not None:  # nothing was created under the key: free it
                    self.store.release_idempotency_key(self.principal.id, idempotency_key)
                raise
        except ApiError as exc:
            self.metrics.rejected.labels(exc.code).inc()
            raise
        try:
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
                batch_key=batch_key(resolved, checked.shape) if checked.shape else None,  # () for a pull job
                callback=None if callback_url is None else callback_meta(callback_url, job_id, job_url, settings),
            )
        except BaseException:
            if self.slots is not None:  # not queued: give the key its slot back
                self.slots.release(self.principal.id, job_id)
            if idempotency_key is not None:  # and the Idempotency-Key: a retry must create the job
                try:
                    self.store.release_idempotency_key(self.principal.id, idempotency_key)
                except RedisError:  # Redis is what failed: the key expires with result_ttl
                    pass
            raise
        finally:
            release_capacity(self.queue, [job_id])  # queued now (or not): the queue counts it
        self.metrics.submitted.labels(info.id).inc()
        self.require_replicas()  # a failure keeps the Idempotency-Key: a retry finds the job if it survived
        return job_id

    def stats(self) -> Stats:
        """The workers' announcements (which devices serve), for the precision check."""
        return Stats(self.store.connection, self.settings.key_prefix)

    def require_replicas(self, count: bool = True) -> None:
        """With LRPSEG_REDIS_WAIT_REPLICAS = n, a 202 means n replicas have the job, so a master
        failover (Sentinel promotes the replica with the most data) cannot lose it. Short of n
        within `redis_wait_timeout`: 503. The job stays queued and may still run: a client that
        retries with the same Idempotency-Key gets that job back if it is still there."""
        acked = wait_for_replicas(self.store.connection, self.settings, self.settings.key_prefix)
        if acked is not None and acked < self.settings.redis_wait_replicas:
            if count:
                self.metrics.rejected.labels("not-replicated").inc()
            raise retry_later(
                503,
                "Service unavailable",
                f"the job was not confirmed by {self.settings.redis_wait_replicas} Redis replica(s) in time",
                "not-replicated",
                self.settings.retry_after,
            )

    def check_callback_url(self, url: str | None) -> str | None:
        s = self.settings
        return check_callback_url(url, s.callback_allowed_hosts, s.callback_secret, s.callback_require_https)

    def check_many(self, items: list[Item], params: str | None) -> list[Prepared]:
        """Validate every image of a batch before anything is stored (the first bad one is a 4xx
        naming its index and file name), then take the key's job slots for all or none."""
        settings = self.settings
        try:
            parsed = parse_params(params)
            job_ids = [new_job_id() for _ in items]
            check_capacity(self.queue, settings, job_ids)
            try:
                prepared = []
                for index, item in enumerate(items):
                    try:
                        checked = check_submission(
                            self.registry, settings, parsed, item.inputs.image, item.inputs.ground_truth, self.stats()
                        )
                    except ApiError as exc:
                        raise in_batch(exc, index, item.name) from None
                    prepared.append(Prepared(job_ids[index], item, checked))
                reserved: list[str] = []
                try:
                    for ready in prepared:
                        reserve_slot(self.slots, self.principal, ready.job_id, settings)
                        reserved.append(ready.job_id)
                except ApiError:
                    self.release_slots(reserved)
                    raise
            except ApiError:
                release_capacity(self.queue, job_ids)
                raise
        except ApiError as exc:
            self.metrics.rejected.labels(exc.code).inc()
            raise
        return prepared

    def release_slots(self, job_ids: list[str]) -> None:
        if self.slots is not None:
            for job_id in job_ids:
                self.slots.release(self.principal.id, job_id)

    def enqueue_many(self, prepared: list[Prepared], *, batch_id: str, hooks: bool) -> None:
        """Queue checked batch items as ordinary jobs (`hooks`: count their ends for the batch callback)."""
        for n, item in enumerate(prepared):
            checked = item.checked
            try:
                enqueue(
                    self.queue,
                    self.store,
                    self.settings,
                    checked.info,
                    checked.params,
                    item.item.inputs,
                    job_id=item.job_id,
                    request_id=self.request_id,
                    principal=self.principal,
                    batch_key=batch_key(checked.params, checked.shape),
                    batch_id=batch_id,
                    hooks=hooks,
                )
            except BaseException:
                self.release_slots([p.job_id for p in prepared[n:]])
                release_capacity(self.queue, [p.job_id for p in prepared[n:]])
                raise
            release_capacity(self.queue, [item.job_id])
            self.metrics.submitted.labels(checked.info.id).inc()


async def get_intake(
    settings: SettingsDep,
    registry: RegistryDep,
    queue: QueueDep,
    store: StoreDep,
    metrics: MetricsDep,
    request_id: RequestIdDep,
    principal: PrincipalDep,
    slots: JobSlotsDep,
) -> Intake:
    return Intake(settings, registry, queue, store, metrics, request_id, principal, slots)


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
    params = field.startswith("params")
    return ApiError(
        status,
        "Invalid parameters" if params else STATUS_TITLES.get(status, "Invalid input"),
        f"{field}: {message}",
        code="invalid-params" if params and code == "invalid-input" else code,  # as for a params typo
        errors=[FieldError(field=field, message=message)],
    )


def decode_limits(settings: Settings) -> DecodeLimits:
    return DecodeLimits(settings.pixel_limit, settings.max_side, settings.max_voxels)


def raw(upload: Upload) -> RawInput:
    return RawInput(upload.data, upload.filename, upload.content_type)


def input_problem(exc: InputError) -> ApiError:
    """The library's input error as problem+json naming the field (its status and code kept)."""
    return _invalid(exc.field, exc.detail, exc.status, exc.code)


def decode(upload: Upload, field: str, settings: Settings, frame: int | None) -> DecodedImage:
    """The upload decoded as a job would decode it (the viewer's preview); ApiError naming `field`."""
    try:
        return decode_input(raw(upload), field, decode_limits(settings), frame)
    except InputError as exc:
        raise input_problem(exc) from None


def resolve_model(registry: Registry, params: JobParams) -> ModelInfo:
    ref = params.model or registry.default_id
    try:
        return registry.get(ref)
    except RegistryError as exc:
        raise _invalid("params.model", str(exc)) from None


@dataclass(frozen=True)
class Checked:
    """A valid submission: its model, the params with defaults resolved, the decoded image's (C, H, W)."""

    info: ModelInfo
    params: ResolvedParams
    shape: tuple[int, ...]


def check_submission(
    registry: Registry,
    settings: Settings,
    params: JobParams,
    image: Upload,
    gt: Upload | None,
    stats: Stats | None = None,
) -> Checked:
    """The model, the params with defaults resolved and the decoded image's shape (what workers
    group batches by), through the library's one input path (lrpseg.inputs.prepare_inputs, which
    the worker runs again on the stored upload); ApiError on anything wrong. A pull job
    (params.source) is checked without its image, which only the worker fetches: shape ()."""
    info = resolve_model(registry, params)
    check_pacs_params(params, settings)
    check_pull_upload(params, image)
    try:
        shape: tuple[int, ...] = ()
        if params.source is not None:
            resolved = resolve_params(params, info)
        else:
            inputs = prepare_inputs(info, params, raw(image), None if gt is None else raw(gt), decode_limits(settings))
            resolved, shape = inputs.params, inputs.shape
        check_layer_names(registry, info, resolved.params)  # what the worker's engine would refuse
        if stats is not None:  # bf16/fp16 only where a CUDA worker serves them
            check_precision(resolved.params, settings, stats)
    except InputError as exc:
        raise input_problem(exc) from None
    return Checked(info, resolved, shape)


def reserve_slot(slots: JobSlots | None, principal: Principal, job_id: str, settings: Settings) -> None:
    """Take one of the key's `max_jobs_per_key` slots for this job, or 429."""
    if slots is None:
        return
    ok, count = slots.reserve(principal.id, job_id)
    if not ok:
        raise retry_later(
            429,
            "Too many jobs",
            f"key {principal.id!r} has {count} unfinished jobs; the limit is {settings.max_jobs_per_key}",
            "too-many-jobs",
            settings.retry_after,
        )


# KEYS: the queue list, the reservations zset   ARGV: max_queue, now, stale_after, job ids...
_ADMIT = """
redis.call('zremrangebyscore', KEYS[2], 0, tonumber(ARGV[2]) - tonumber(ARGV[3]))
local n = redis.call('llen', KEYS[1]) + redis.call('zcard', KEYS[2])
if n + #ARGV - 3 > tonumber(ARGV[1]) then return {0, n} end
for i = 4, #ARGV do redis.call('zadd', KEYS[2], ARGV[2], ARGV[i]) end
return {1, n}
"""
RESERVATION_TTL = 60.0  # s: a reservation whose request died frees itself after this


def reservations_key(queue: Queue) -> str:
    return f"{queue.key}:admitted"


def check_capacity(queue: Queue, settings: Settings, job_ids: list[str]) -> None:
    """Reserve queue places for `job_ids` or 503, in one atomic step: queued + reserved never
    exceeds max_queue however many requests race (a check-then-enqueue overshot it, issue 15).
    `release_capacity` once the jobs are queued (or not)."""
    args: list[str | int | float] = [settings.max_queue, time.time(), RESERVATION_TTL, *job_ids]
    ok, count = queue.connection.eval(_ADMIT, 2, queue.key, reservations_key(queue), *args)
    if not ok:
        raise retry_later(
            503, "Queue full", f"{count} jobs are waiting; try again later", "queue-full", settings.retry_after
        )


def release_capacity(queue: Queue, job_ids: list[str]) -> None:
    if job_ids:
        try:
            queue.connection.zrem(reservations_key(queue), *job_ids)
        except RedisError:  # Redis is what failed: the reservation frees itself (RESERVATION_TTL)
            pass


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
    params: ResolvedParams,
    inputs: Inputs,
    *,
    job_id: str,
    request_id: str,
    principal: Principal,
    batch_key: str | None = None,
    callback: dict[str, Any] | None = None,
    batch_id: str | None = None,
    hooks: bool = False,
) -> Job:
    """Queue the job; `batch_key` (lrpseg.pipeline.batch_key) lets a worker batch it with equal-keyed ones.
    `callback` (callback_meta) and `batch_id` go into its meta; jobs with a callback (or `hooks`)
    get RQ end callbacks that record the delivery (core.job_end)."""
    meta: dict[str, Any] = {}
    if callback is not None:
        meta[CALLBACK] = callback
    if batch_id is not None:
        meta[BATCH_ID] = batch_id
    sends = send_meta(params.params, settings)  # DICOM results to PACS destinations (core.dicom_send)
    if sends:
        meta[SEND] = sends
    ends = callback is not None or hooks or bool(sends)
    if ends:  # the end hooks may run in any process (a worker, or the API reaping a lost job)
        meta[HOOKS] = {"prefix": settings.key_prefix, "ttl": settings.result_ttl}
    store.create_record(job_id, principal.id, settings.tombstone_ttl)
    store.put_inputs(job_id, inputs, ttl=settings.result_ttl)
    Claims(queue.connection, settings.key_prefix, settings.job_lost_after).opened(job_id)  # watched until it ends
    return queue.enqueue_call(
        TASK,
        args=(job_id,),
        kwargs={"params": params.params.model_dump(mode="json")},
        job_id=job_id,
        timeout=settings.job_timeout,
        result_ttl=settings.result_ttl,
        failure_ttl=settings.failure_ttl,
        retry=Retry(max=settings.job_retries) if settings.job_retries else None,
        description=f"lrpseg {info.id}",
        meta={
            REQUEST_ID: request_id,
            OWNER: principal.id,
            MODEL: info.id,
            STAGE: "queued",
            FRACTION: 0.0,
            BATCH_KEY: batch_key,
            **meta,
        },
        on_success=Callback(ON_SUCCESS, timeout=CALLBACK_HOOK_TIMEOUT) if ends else None,
        on_failure=Callback(ON_FAILURE, timeout=CALLBACK_HOOK_TIMEOUT) if ends else None,
    )


def callback_meta(url: str, job_id: str, job_url: Callable[[str], str] | None, settings: Settings) -> dict[str, Any]:
    """What a job's meta keeps about its callback: where, the delivery id, the link the body carries."""
    return {
        "url": url,
        "delivery_id": new_delivery_id(),
        "job_url": job_url(job_id) if job_url is not None else None,
        "max_attempts": settings.callback_attempts,
    }


@dataclass(frozen=True)
class Item:
    """One image of a batch: its name (file name in the request or the zip) and its uploads."""

    name: str
    inputs: Inputs


@dataclass(frozen=True)
class Prepared:
    """A batch item that passed validation, with the job id it will be queued under."""

    job_id: str
    item: Item
    checked: Checked


def in_batch(exc: ApiError, index: int, name: str) -> ApiError:
    """An image's error, re-addressed to the batch item (`images[3]`) and naming its file."""
    where = f"images[{index}]"
    errors = [
        FieldError(field=where if e.field == "image" else f"{where}.{e.field}", message=e.message)
        for e in exc.errors or []
    ]
    detail = f"{where} ({name}): {exc.detail}"
    return ApiError(exc.status, exc.title, detail, code=exc.code, headers=exc.headers, errors=errors or None)
