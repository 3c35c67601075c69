"""Mixed precision: refused off CUDA, one cached copy per format, close to fp32 where it runs."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch

from lrpseg.inputs import resolve_params
from lrpseg.io import decode_image
from lrpseg.lrp import explain
from lrpseg.pipeline import batch_key, run_job
from lrpseg.precision import PrecisionError, at_precision, check_precision
from lrpseg.registry import default_registry
from schemas.params import JobParams
from tests.service import factories


@pytest.fixture(scope="module")
def unet():  # the shipped default U-Net
    registry = default_registry()
    return registry.get(), registry.load()


def test_low_precision_is_refused_off_cuda() -> None:
    assert check_precision("fp32", torch.device("cpu")) == torch.float32
    for name in ("bf16", "fp16"):
        with pytest.raises(PrecisionError, match="CUDA worker"):
            check_precision(name, torch.device("cpu"))
    with pytest.raises(PrecisionError, match="one of"):
        check_precision("fp8", torch.device("cuda"))


def test_a_cpu_job_with_bf16_fails_before_any_work(unet) -> None:
    info, model = unet
    image = decode_image(factories.png_bytes(factories.defect_image(64)[0]))
    with pytest.raises(PrecisionError):
        run_job(model, info, image, JobParams.model_validate({"precision": "bf16"}))


def test_each_format_is_one_cached_copy(unet) -> None:
    _, model = unet
    assert at_precision(model, torch.float32) is model
    low = at_precision(model, torch.bfloat16)
    assert low is at_precision(model, torch.bfloat16) and low is not model
    assert all(p.dtype == torch.bfloat16 for p in low.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the shared model is untouched


def test_bf16_sweep_stays_close_to_fp32(unet) -> None:
    """The copy runs the same engine in bfloat16 (measured here on the CPU, where the service does not serve it)."""
    info, model = unet
    image, _ = factories.defect_image(96)
    x = info.normalize(torch.from_numpy(image).float()[None, None])
    ref = explain(model, x, target="class", cls=1, rules="ours", bounds=info.zbox_bounds).relevance
    low = explain(at_precision(model, torch.bfloat16), x.bfloat16(), target="class", cls=1, rules="ours",
                  bounds=info.zbox_bounds).relevance.float()  # fmt: skip
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    assert abs(float(low.sum() / ref.sum()) - 1) < 0.05  # conservation survives the 8-bit mantissa
    assert float((low - ref).abs().max() / ref.abs().max()) < 0.5


def test_precision_splits_batches(unet) -> None:
    info, _ = unet
    keys = {batch_key(resolve_params(JobParams.model_validate({"precision": p}), info), (1, 64, 64))
            for p in ("fp32", "bf16")}  # fmt: skip
    assert len(keys) == 2


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_cuda_job_in_low_precision_is_close_to_fp32(unet, precision: str) -> None:
    info, model = unet
    gpu = copy.deepcopy(model).cuda()  # the module-scoped model stays on the CPU
    image = decode_image(factories.png_bytes(factories.defect_image(128)[0]))
    params = {"artifacts": ["relevance.npy", "mask-gmm.png"], "masks": ["gmm"]}
    ref = run_job(gpu, info, image, JobParams.model_validate(params), device="cuda")
    low = run_job(gpu, info, image, JobParams.model_validate({**params, "precision": precision}), device="cuda")
    r32 = np.load(io.BytesIO(ref.artifacts["relevance.npy"]))
    r16 = np.load(io.BytesIO(low.artifacts["relevance.npy"]))
    assert np.isfinite(r16).all()
    assert abs(r16.sum() / r32.sum() - 1) < 0.05
    assert low.result["explanation"]["conservation"] == pytest.approx(
        ref.result["explanation"]["conservation"], abs=0.05
    )
