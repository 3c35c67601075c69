"""A job's inputs from the store, decoded and checked against its model: what the pipeline takes."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from torch import nn

from lrpseg.io import DecodedImage, decode_image
from lrpseg.pipeline import check_image, resolve_params
from lrpseg.registry import ModelInfo
from schemas.params import JobParams
from workers import runtime


class InputsMissing(RuntimeError):
    """The upload expired or was deleted before a worker got to the job."""


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
    check_image(params, info, image.channels, image.height, image.width)
    truth = None
    if inputs.ground_truth is not None:
        gt = inputs.ground_truth
        truth = _decode(gt.data, gt.filename, gt.content_type, rt, None).array.max(axis=0) > 0
    return Loaded(info, model, params, image, truth, (time.perf_counter() - start) * 1000)


def _decode(
    data: bytes, filename: str | None, content_type: str | None, rt: runtime.WorkerRuntime, frame: int | None
) -> DecodedImage:
    s = rt.settings
    return decode_image(
        data, filename=filename, content_type=content_type, max_pixels=s.max_pixels, max_side=s.max_side, frame=frame
    )
