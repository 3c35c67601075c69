"""A job's inputs read back from the store (or, in pull mode, fetched from a PACS: workers.pull)
and put through the one input path (lrpseg.inputs)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from torch import nn

from lrpseg.inputs import DecodeLimits, JobInputs, ParamsError, RawInput, prepare_inputs
from schemas.params import JobParams
from workers import runtime
from workers.pull import fetch_series


class InputsMissing(RuntimeError):
    """The upload expired or was deleted before a worker got to the job."""


@dataclass
class ReadyJob:
    """A job ready for the pass: its decoded, checked inputs, its model, and how long reading them took."""

    inputs: JobInputs
    model: nn.Module
    decode_ms: float


def load(rt: runtime.WorkerRuntime, job_id: str, params: JobParams) -> ReadyJob:
    """Inputs from the store, through `prepare_inputs` (errors name the input), and the model."""
    start = time.perf_counter()
    stored = rt.store.get_inputs(job_id)
    if stored is None:
        raise InputsMissing(f"the inputs of job {job_id} are gone (expired or deleted)")
    ref = params.model or rt.registry.default_id
    if ref is None:
        raise ParamsError("params.model", "no model named and no default model in the registry")
    info, model = rt.model(ref)
    gt = stored.ground_truth
    if params.source is not None:  # pull mode: the stored upload is the reference; fetch the series
        image = fetch_series(params.source.dicomweb, rt.settings)
    else:
        image = RawInput(stored.image.data, stored.image.filename, stored.image.content_type)
    inputs = prepare_inputs(
        info,
        params,
        image,
        None if gt is None else RawInput(gt.data, gt.filename, gt.content_type),
        DecodeLimits(rt.settings.pixel_limit, rt.settings.max_side, rt.settings.max_voxels),
    )
    return ReadyJob(inputs, model, (time.perf_counter() - start) * 1000)
