"""The Open Inference Protocol v2 (REST) over the same queue and workers as /v1.

Health, server and model metadata, and `POST /v2/models/{name}[/versions/{v}]/infer`: the
`image` input tensor ((N, C, H, W), (C, H, W) or (H, W), any numeric datatype, scaled like a
.npy upload) becomes N ordinary jobs; the call waits for them (at most the `timeout`
parameter, microseconds as in Triton, capped by `max_wait`) and answers with the
`segmentation` (class indices) or `probabilities`, the `relevance` ((N, C, H, W) float32,
the jobs' relevance.npy) and `result` (each job's result JSON) as output tensors. The
explanation settings are request parameters: `params` (the /v1 params JSON) and the
shortcuts listed in PARAMETERS. Errors are problem+json with the protocol's `error` member.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from rq.job import Job
from starlette.datastructures import Headers

import lrpseg
from lrpseg.registry import ModelInfo, Registry, RegistryError
from schemas.inference_protocol import (
    InferRequest,
    InferResponse,
    Live,
    ModelMetadata,
    Ready,
    ServerMetadata,
    TensorMetadata,
)
from schemas.jobs import JobState
from schemas.problems import FieldError, Problem
from service import views
from service.deps import RedisDep, RegistryDep, SettingsDep, StatsDep, get_principal
from service.errors import ApiError
from service.routers import health
from service.submission import Intake, IntakeDep, check_capacity, new_job_id, release_capacity
from service.tensors import (
    HEADER_LENGTH,
    TensorError,
    decompress,
    encode_outputs,
    input_array,
    parse_request,
    response_body,
)

router = APIRouter(prefix="/v2", tags=["inference protocol"])
AUTH = [Depends(get_principal)]
IMAGE = "image"
# request parameter -> where it goes in the /v1 params
PARAMETERS = {
    "task": "task",
    "method": "method",
    "composite": "lrp.composite",
    "target_kind": "target.kind",
    "target_class": "target.cls",
    "masks": "masks",  # comma-separated
    "threshold": "visualisation.threshold",
    "threshold_mode": "visualisation.threshold_mode",
    "resize": "resize",
}
IGNORED = {"priority", "sequence_id", "sequence_start", "sequence_end", "binary_data_output", "timeout"}
JOB_ERROR_STATUS = {"bad_input": 422, "timeout": 504, "out_of_memory": 503, "worker_lost": 503, "inputs_missing": 503}
PLATFORM = "lrpseg_pytorch"


def bad_request(field: str, message: str, status: int = 400) -> ApiError:
    return ApiError(
        status,
        "Invalid inference request",
        message,
        code="invalid-inference-request",
        errors=[FieldError(field=field, message=message)],
    )


def find_model(registry: Registry, name: str, version: str | None) -> ModelInfo:
    ref = name if version is None else f"{name}@{version}"
    try:
        info = registry.get(ref)
    except RegistryError as exc:
        raise ApiError(404, "Not found", str(exc), code="model-not-found") from None
    if info.name != name:  # registry.get also resolves other spellings; the protocol names models exactly
        raise ApiError(404, "Not found", f"no model named {name!r}", code="model-not-found")
    return info


def metadata(info: ModelInfo, registry: Registry) -> ModelMetadata:
    side = info.input_size or -1
    relevance = TensorMetadata(name="relevance", datatype="FP32", shape=[-1, info.in_channels, side, side])
    if info.kind == "classifier":
        answer = TensorMetadata(name="probabilities", datatype="FP32", shape=[-1, info.num_classes])
    else:
        answer = TensorMetadata(name="segmentation", datatype=label_datatype(info), shape=[-1, side, side])
    return ModelMetadata(
        name=info.name,
        versions=[i.version for i in registry.list() if i.name == info.name],
        platform=PLATFORM,
        inputs=[TensorMetadata(name=IMAGE, datatype="UINT8", shape=[-1, info.in_channels, side, side])],
        outputs=[answer, relevance, TensorMetadata(name="result", datatype="BYTES", shape=[-1])],
        parameters={"kind": info.kind, "classes": ",".join(info.class_names), "id": info.id},
    )


def label_datatype(info: ModelInfo) -> str:
    return "UINT8" if info.num_classes <= 256 else "INT32"


# ---- health and metadata ------------------------------------------------------------------------


@router.get("", response_model=ServerMetadata, summary="Server metadata")
async def server_metadata() -> ServerMetadata:
    return ServerMetadata(name="lrpseg", version=lrpseg.__version__, extensions=["binary_tensor_data"])


@router.get("/health/live", response_model=Live)
async def live() -> Live:
    return Live(live=True)


@router.get("/health/ready", response_model=Ready, responses={503: {"model": Ready}})
def ready(redis: RedisDep, stats: StatsDep, registry: RegistryDep, settings: SettingsDep) -> JSONResponse:
    """Ready as /readyz is: Redis answers, a worker is alive with the default model loaded."""
    ok = health.readyz(redis, stats, registry, settings).status_code == 200
    headers = None if ok else {"Retry-After": str(settings.retry_after)}
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503, headers=headers)


@router.get("/models/{name}", response_model=ModelMetadata, dependencies=AUTH)
@router.get("/models/{name}/versions/{version}", response_model=ModelMetadata, dependencies=AUTH)
def model_metadata(name: str, registry: RegistryDep, version: str | None = None) -> ModelMetadata:
    return metadata(find_model(registry, name, version), registry)


@router.get("/models/{name}/ready", response_model=Ready, dependencies=AUTH, responses={503: {"model": Ready}})
@router.get(
    "/models/{name}/versions/{version}/ready",
    response_model=Ready,
    dependencies=AUTH,
    responses={503: {"model": Ready}},
)
def model_ready(
    name: str, registry: RegistryDep, stats: StatsDep, settings: SettingsDep, version: str | None = None
) -> JSONResponse:
    """Ready when a live worker has this model loaded."""
    info = find_model(registry, name, version)
    loaded = set().union(*(w.models for w in stats.live_workers(settings.worker_max_age)))
    ok = info.id in loaded
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


# ---- inference ----------------------------------------------------------------------------------


def add_schemas(openapi: dict[str, Any]) -> dict[str, Any]:
    """Put InferRequest (and what it refers to) into the OpenAPI components: the infer routes read
    their body themselves (JSON or the binary extension), so FastAPI does not list it."""
    schema = InferRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    components = openapi.setdefault("components", {}).setdefault("schemas", {})
    components.update(schema.pop("$defs", {}))
    components["InferRequest"] = schema
    return openapi


INFER_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "malformed request or tensor (`error` says which field)"},
    404: {"model": Problem, "description": "no such model or version"},
    422: {"model": Problem, "description": "the image does not fit the model, or bad explanation parameters"},
    429: {"model": Problem, "description": "too many requests or jobs for this key (Retry-After)"},
    503: {"model": Problem, "description": "queue full (Retry-After)"},
    504: {"model": Problem, "description": "the jobs did not end within the timeout; they go on (ids in `error`)"},
}
INFER_DOC = {
    "requestBody": {
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}},
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": f"binary tensor extension: JSON of {HEADER_LENGTH} bytes, then the tensors' bytes",
            },
        },
        "required": True,
    }
}


@router.post(
    "/models/{name}/infer",
    response_model=InferResponse,
    dependencies=AUTH,
    responses=INFER_ERRORS,
    openapi_extra=INFER_DOC,
    summary="Run the model and explain it: segmentation/probabilities, relevance and result as tensors",
)
@router.post(
    "/models/{name}/versions/{version}/infer",
    response_model=InferResponse,
    dependencies=AUTH,
    responses=INFER_ERRORS,
    openapi_extra=INFER_DOC,
    summary="Infer with one version of the model",
)
async def infer(
    request: Request, name: str, intake: IntakeDep, redis: RedisDep, version: str | None = None
) -> Response:
    info = find_model(intake.registry, name, version)
    settings = intake.settings
    body = await request.body()
    try:
        body = decompress(body, request.headers.get("Content-Encoding"), settings.max_upload_bytes)
        parsed, tail = parse_request(body, request.headers.get(HEADER_LENGTH))
    except TensorError as exc:
        raise bad_request(exc.field, str(exc)) from None
    content, headers = await run_in_threadpool(run_inference, intake, redis, info, parsed, tail)
    return Response(content, headers=headers)


def run_inference(
    intake: Intake, redis: Any, info: ModelInfo, req: InferRequest, tail: bytes
) -> tuple[bytes, dict[str, str]]:
    settings = intake.settings
    images = image_batch(req, tail, info, settings.max_pixels * 4 * settings.max_batch_images)
    if len(images) > settings.max_batch_images:
        raise bad_request("inputs[0].shape", f"{len(images)} images; the limit is {settings.max_batch_images}", 413)
    outputs = requested_outputs(req, info)
    params = job_params(req.parameters or {}, info, outputs)
    wait = wait_seconds(req.parameters or {}, settings.max_wait)
    room = [new_job_id() for _ in images]  # room for all N, or a 503 before any is queued
    check_capacity(intake.queue, settings, room)
    release_capacity(intake.queue, room)  # each accept() reserves its own place
    job_ids: list[str] = []
    for array in images:
        job_ids.append(intake.accept(npy_upload(array), None, params, None))
    deadline = time.monotonic() + wait
    jobs = []
    for job_id in job_ids:
        views.wait_for_end(redis, job_id, max(0.0, deadline - time.monotonic()))
        jobs.append(views.fetch_job(redis, intake.store, job_id, intake.principal))
    for job in jobs:
        check_ended(job, job_ids, settings.retry_after)
    tensors = output_tensors(jobs, outputs, info, intake)
    binary = {o.name for o in req.outputs or [] if (o.parameters or {}).get("binary_data")}
    if req.outputs is None and (req.parameters or {}).get("binary_data_output"):
        binary = set(outputs)
    entries, raw = encode_outputs(tensors, binary)
    payload = InferResponse(
        model_name=info.name,
        model_version=info.version,
        id=req.id or job_ids[0],
        parameters={"job_ids": ",".join(job_ids)},
        outputs=entries,
    )
    return response_body(payload.model_dump(exclude_none=True), raw)


def image_batch(req: InferRequest, tail: bytes, info: ModelInfo, max_elements: int) -> list[np.ndarray]:
    """The `image` input as a list of (C, H, W) arrays (one per batch item)."""
    names = [t.name for t in req.inputs]
    if names != [IMAGE]:
        raise bad_request("inputs", f"send one input named {IMAGE!r}; got {names}")
    try:
        array, end = input_array(req.inputs[0], 0, tail, 0, max_elements)
    except TensorError as exc:
        raise bad_request(exc.field, str(exc)) from None
    if end != len(tail):
        raise bad_request("body", f"{len(tail) - end} bytes after the last binary tensor")
    if array.ndim == 2:
        array = array[np.newaxis, np.newaxis]
    elif array.ndim == 3:
        array = array[np.newaxis]
    if array.ndim != 4 or array.shape[1] != info.in_channels or 0 in array.shape:
        raise bad_request(
            "inputs[0].shape",
            f"shape {list(req.inputs[0].shape)}: model {info.id} takes (N, {info.in_channels}, H, W), "
            f"({info.in_channels}, H, W)" + (" or (H, W)" if info.in_channels == 1 else ""),
            422,
        )
    return list(array)


def requested_outputs(req: InferRequest, info: ModelInfo) -> list[str]:
    available = ["probabilities" if info.kind == "classifier" else "segmentation", "relevance", "result"]
    if req.outputs is None:
        return available
    names = [o.name for o in req.outputs]
    unknown = [n for n in names if n not in available]
    if unknown or len(set(names)) != len(names):
        raise bad_request("outputs", f"outputs {names}: each once, from {available}")
    return names


def job_params(parameters: dict[str, Any], info: ModelInfo, outputs: list[str]) -> str:
    """The /v1 params JSON for these request parameters (the model is the URL's)."""
    unknown = sorted(set(parameters) - set(PARAMETERS) - IGNORED - {"params"})
    if unknown:
        known = ", ".join(["params", *PARAMETERS])
        raise bad_request(f"parameters.{unknown[0]}", f"unknown parameter {unknown[0]!r}; lrpseg takes {known}")
    raw = parameters.get("params", "{}")
    try:
        params = json.loads(raw) if isinstance(raw, str) else None
    except json.JSONDecodeError:
        params = None
    if not isinstance(params, dict):
        raise bad_request("parameters.params", "params must be a JSON object in a string (the /v1 params)")
    for key, path in PARAMETERS.items():
        if key in parameters:
            value = parameters[key]
            if key == "masks":
                value = [m.strip() for m in str(value).split(",") if m.strip()]
            node = params
            *parents, leaf = path.split(".")
            for part in parents:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise bad_request(f"parameters.{key}", f"params.{part} must be an object")
            node[leaf] = value
    if params.get("model") not in (None, info.id, info.name):
        raise bad_request("parameters.params", f"params.model {params['model']!r} differs from the URL's {info.id}")
    params["model"] = info.id
    wanted = {"relevance": "relevance.npy", "segmentation": "segmentation.npy"}
    artifacts = [wanted[o] for o in outputs if o in wanted]
    params["artifacts"] = sorted(set(artifacts) | set(params.get("artifacts") or []))
    if "relevance" in outputs and params.get("task") == "segment":
        raise bad_request("outputs", "task 'segment' computes no relevance; leave it out of outputs")
    return json.dumps(params)


def wait_seconds(parameters: dict[str, Any], max_wait: float) -> float:
    """Triton's `timeout` parameter is in microseconds; without it, the longest wait allowed."""
    timeout = parameters.get("timeout")
    if timeout is None:
        return max_wait
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise bad_request("parameters.timeout", "timeout must be a positive number of microseconds")
    return min(max_wait, timeout / 1e6)


def npy_upload(array: np.ndarray) -> UploadFile:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    size = buffer.tell()
    buffer.seek(0)
    return UploadFile(
        buffer, size=size, filename="tensor.npy", headers=Headers({"content-type": "application/octet-stream"})
    )


def check_ended(job: Job, job_ids: list[str], retry_after: int) -> None:
    state = views.state_of(job)
    if state in (JobState.queued, JobState.started):
        raise ApiError(
            504,
            "Inference timed out",
            f"job {job.id} is still {state.value} after the request's timeout; its result will be at "
            f"/v1/jobs/{job.id} (all jobs: {', '.join(job_ids)})",
            code="inference-timeout",
            headers={"Retry-After": str(retry_after)},
        )
    if state is not JobState.finished:
        error = views.error_of(job, job.meta or {})
        raise ApiError(
            JOB_ERROR_STATUS.get(error.code, 500),
            "Inference failed",
            f"job {job.id} {state.value}: {error.code}: {error.detail}",
            code=f"job-{error.code.replace('_', '-')}",
        )


def output_tensors(
    jobs: list[Job], outputs: list[str], info: ModelInfo, intake: Intake
) -> list[tuple[str, np.ndarray | list[bytes]]]:
    results: list[dict[str, Any]] = [job.return_value() or {} for job in jobs]
    tensors: list[tuple[str, np.ndarray | list[bytes]]] = []
    for name in outputs:
        if name == "result":
            tensors.append((name, [json.dumps(r, separators=(",", ":")).encode() for r in results]))
        elif name == "probabilities":
            probs = [[r["classification"]["probabilities"][c] for c in info.class_names] for r in results]
            tensors.append((name, np.asarray(probs, np.float32)))
        else:
            arrays = []
            for job in jobs:
                data = intake.store.get_artifact(job.id, f"{name}.npy")
                if data is None:
                    raise ApiError(410, "Gone", f"job {job.id} has no {name}.npy any more", code="job-gone")
                arrays.append(np.load(io.BytesIO(data), allow_pickle=False))
            tensors.append((name, np.stack(arrays)))
    return tensors
