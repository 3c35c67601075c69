"""The RQ job function: inputs from the store -> pipeline -> artifacts to the store, result out.

Arguments are only the job id and the validated params (JSON), so the RQ JSON serializer
carries them and any worker on any machine can run the job.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError
from rq import get_current_job
from rq.timeouts import JobTimeoutException
from torch import nn

from lrpseg.io import DecodedImage, decode_image
from lrpseg.pipeline import PipelineResult, finish, prepare_image, resolve_params, run_job
from lrpseg.registry import ModelInfo
from schemas.params import JobParams
from schemas.results import JobResult
from workers import batching, faults, runtime
from workers.progress import JobCancelled, Reporter

log = logging.getLogger("lrpseg.worker")


class InputsMissing(RuntimeError):
    """The upload expired or was deleted before a worker got to the job."""


def process_job(job_id: str, params: dict[str, Any]) -> dict[str, Any]:
    rt = runtime.current()
    reporter = Reporter(get_current_job(), rt.store, job_id)
    model_id = str(params.get("model") or "unknown")
    try:
        result = _run(rt, reporter, job_id, JobParams.model_validate(params))
    except Exception as exc:
        code, detail = _describe(exc)
        reporter.fail(code, detail)
        rt.store.delete_inputs(job_id)
        rt.stats.count_job(model_id, "cancelled" if code == "cancelled" else "failed")
        log.info("job %s failed: %s", job_id, code)
        raise
    rt.stats.count_job(result["model"]["id"], "finished")
    return result


@dataclass
class Loaded:
    """A job's inputs, decoded and checked against its model: what the pipeline takes."""

    info: ModelInfo
    model: nn.Module
    params: JobParams
    image: DecodedImage
    truth: np.ndarray | None
    decode_ms: float


def load(rt: runtime.WorkerRuntime, job_id: str, params: JobParams) -> Loaded:
    """Inputs from the store, decoded; the model; the params resolved against it (errors name the input)."""
    start = time.perf_counter()
    inputs = rt.store.get_inputs(job_id)
    if inputs is None:
        raise InputsMissing(f"the inputs of job {job_id} are gone (expired or deleted)")
    info, model = rt.model(params.model or rt.registry.default_id)
    params = resolve_params(params, info)
    image = _decode(inputs.image.data, inputs.image.filename, inputs.image.content_type, rt, params.frame)
    image = prepare_image(image, params, info)
    truth = None
    if inputs.ground_truth is not None:
        gt = inputs.ground_truth
        truth = _decode(gt.data, gt.filename, gt.content_type, rt, None).array.max(axis=0) > 0
    return Loaded(info, model, params, image, truth, (time.perf_counter() - start) * 1000)


def _run(rt: runtime.WorkerRuntime, reporter: Reporter, job_id: str, params: JobParams) -> dict[str, Any]:
    batched = batching.take(job_id)  # this job's share of a batch pass the worker ran before it
    start = time.perf_counter()
    if batched is None:
        reporter("decode", 0.02)
        loaded = load(rt, job_id, params)
        start, before_ms = time.perf_counter(), loaded.decode_ms
        out: PipelineResult = run_job(
            loaded.model, loaded.info, loaded.image, loaded.params, loaded.truth, progress=reporter, device=rt.device
        )
    else:
        loaded, forwarded = batched.loaded, batched.forwarded
        before_ms = loaded.decode_ms + sum(forwarded.ms.values())
        out = finish(loaded.info, loaded.image, loaded.params, forwarded, loaded.truth, progress=reporter)
    info = loaded.info
    result = out.result
    JobResult.model_validate(result)  # a contract break fails this job, not every later GET of it
    reporter("store", 0.97)
    rt.store.put_artifacts(job_id, out.artifacts, ttl=rt.settings.result_ttl)
    rt.store.delete_inputs(job_id)
    if rt.store.is_deleted(job_id):  # deleted while we stored: leave nothing behind
        rt.store.mark_deleted(job_id)
        raise JobCancelled(job_id)

    timings = result["timings"]
    timings["decode"] = round(loaded.decode_ms, 3)
    timings["total"] = round(before_ms + (time.perf_counter() - start) * 1000, 3)
    stages = {k: v / 1000 for k, v in timings.items() if v is not None and k != "batch_size"}
    rt.stats.observe_stages(info.id, stages)
    reporter("done", 1.0)
    return result


def _decode(
    data: bytes, filename: str | None, content_type: str | None, rt: runtime.WorkerRuntime, frame: int | None
) -> DecodedImage:
    s = rt.settings
    return decode_image(
        data, filename=filename, content_type=content_type, max_pixels=s.max_pixels, max_side=s.max_side, frame=frame
    )


def _describe(exc: BaseException) -> tuple[str, str]:
    """A code and a message safe to show the caller (no traceback, no data)."""
    if isinstance(exc, JobTimeoutException):
        return "timeout", "the job ran past its time limit"
    if faults.is_out_of_memory(exc):  # the worker frees the device's cache and serves on
        return "out_of_memory", "the device ran out of memory for this job; try a smaller image or fewer masks"
    if isinstance(exc, JobCancelled):
        return "cancelled", "the job was deleted while it ran"
    if isinstance(exc, InputsMissing):
        return "inputs_missing", str(exc)
    if isinstance(exc, ValidationError):  # our own result broke the contract: a bug, not bad input
        return "internal", "the worker produced an invalid result; quote the request id"
    if isinstance(exc, ValueError):  # our library's input errors name what is wrong
        return "bad_input", str(exc)
    return "internal", f"the worker failed ({type(exc).__name__}); quote the request id"
