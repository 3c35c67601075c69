"""The RQ job function: inputs from the store -> pipeline -> artifacts to the store, result out.

Arguments are only the job id and the validated params (JSON), so the RQ JSON serializer
carries them and any worker on any machine can run the job.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, cast

from pydantic import ValidationError
from redis.client import Pipeline
from rq import get_current_job
from rq.timeouts import JobTimeoutException

from core.claims import ClaimLost
from lrpseg.heap import fit_heap
from lrpseg.pipeline import PipelineResult, finish, run_prepared
from schemas.params import JobParams
from schemas.results import JobResult
from workers import faults, runtime, shared_pass
from workers.job_inputs import InputsMissing, load
from workers.progress import JobCancelled, Reporter
from workers.pull import SourceUnavailable

log = logging.getLogger("lrpseg.worker")


def process_job(job_id: str, params: dict[str, Any]) -> dict[str, Any]:
    rt = runtime.current()
    reporter = Reporter(get_current_job(), rt.store, job_id, holds=lambda: rt.holds_claim(job_id))
    model_id = str(params.get("model") or "unknown")
    try:
        result = _run(rt, reporter, job_id, JobParams.model_validate(params))
    except ClaimLost:
        raise  # another run owns the job now: this one records nothing
    except Exception as exc:
        if not rt.holds_claim(job_id):
            raise ClaimLost(job_id) from exc
        code, detail = _describe(exc)
        reporter.fail(code, detail)
        rt.end_write(job_id, lambda pipe: rt.store.destroy_data(job_id, pipe))  # no artifacts: nothing to keep
        rt.store.destroy_key(job_id)
        rt.stats.count_job(model_id, "cancelled" if code == "cancelled" else "failed")
        log.info("job %s failed: %s", job_id, code)
        raise
    rt.stats.count_job(result["model"]["id"], "finished")
    return result


def _run(rt: runtime.WorkerRuntime, reporter: Reporter, job_id: str, params: JobParams) -> dict[str, Any]:
    stored = rt.store.get_result(job_id)
    if stored is not None:  # an earlier run's end write went through; RQ's "finished" did not
        log.warning("job %s: an earlier run stored its result; ending from it", job_id)
        reporter("done", 1.0)
        return cast(dict[str, Any], json.loads(stored))
    batched = shared_pass.take(job_id)  # this job's share of a batch pass the worker ran before it
    start = time.perf_counter()
    if batched is None:
        reporter("decode", 0.02)
        ready = load(rt, job_id, params)
        start, before_ms = time.perf_counter(), ready.decode_ms
        fit_heap(ready.inputs.image.pixels)
        out: PipelineResult = run_prepared(
            ready.model,
            ready.inputs,
            progress=reporter,
            device=rt.device,
            series_base=rt.settings.dicom_series_base,
            encoder=rt.png_encoder,
        )
    else:
        ready, forwarded = batched.ready, batched.forwarded
        before_ms = ready.decode_ms + sum(forwarded.ms.values())
        inputs = ready.inputs
        out = finish(
            inputs.info,
            inputs.image,
            inputs.params,
            forwarded,
            inputs.truth,
            progress=reporter,
            series_base=rt.settings.dicom_series_base,
            encoder=rt.png_encoder,
        )
    info = ready.inputs.info
    result = out.result
    JobResult.model_validate(result)  # a contract break fails this job, not every later GET of it
    reporter("store", 0.97)
    timings = result["timings"]
    timings["decode"] = round(ready.decode_ms, 3)
    timings["total"] = round(before_ms + (time.perf_counter() - start) * 1000, 3)
    ttl = rt.settings.result_ttl
    sealed = rt.store.seal_artifacts(job_id, out.artifacts)
    sealed_result = rt.store.seal_result(job_id, json.dumps(result).encode())
    if sealed is None or sealed_result is None:  # the data key is gone: deleted while it ran
        raise JobCancelled(job_id)

    def store_end(pipe: Pipeline) -> None:  # only while this run owns the job (core.claims)
        rt.store.put_artifacts(job_id, sealed, ttl=ttl, pipeline=pipe)
        rt.store.put_result(job_id, sealed_result, ttl, pipe)
        rt.store.delete_inputs(job_id, pipe)

    rt.end_write(job_id, store_end)
    if rt.store.is_deleted(job_id):  # deleted while we stored: leave nothing behind
        rt.store.mark_deleted(job_id)
        raise JobCancelled(job_id)

    stages = {k: v / 1000 for k, v in timings.items() if v is not None and k != "batch_size"}
    rt.stats.observe_stages(info.id, stages)
    reporter("done", 1.0)
    return result


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
    if isinstance(exc, SourceUnavailable):
        return "source_unavailable", str(exc)
    if isinstance(exc, ValidationError):  # our own result broke the contract: a bug, not bad input
        return "internal", "the worker produced an invalid result; quote the request id"
    if isinstance(exc, ValueError):  # our library's input errors name what is wrong
        return "bad_input", str(exc)
    return "internal", f"the worker failed ({type(exc).__name__}); quote the request id"
