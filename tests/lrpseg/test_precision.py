"""Mixed precision: refused off CUDA; a low-precision forward with a float32 sweep, close to fp32 where it runs."""

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
from lrpseg.precision import DTYPES, PrecisionError, check_precision, forward_precision, widen, widened_logits
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


def test_forward_precision_is_autocast_for_low_formats_only() -> None:
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    with forward_precision(torch.device("cpu"), torch.float32):
        assert torch.nn.functional.conv2d(x, w).dtype == torch.float32
    for dtype in (torch.bfloat16, torch.float16):
        with forward_precision(torch.device("cpu"), dtype):
            low = torch.nn.functional.conv2d(x, w)
        assert low.dtype == dtype and widen(low).dtype == torch.float32
    assert widen(3) == 3
    with pytest.raises(PrecisionError):
        forward_precision(torch.device("cpu"), torch.float64)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("rules", ["conserving-reference", "ours"])
def test_a_low_precision_forward_keeps_the_map_close_to_fp32(unet, precision: str, rules: str) -> None:
    """The forward in bf16/fp16, the sweep in fp32 on its records (measured here on the CPU, where the service
    does not serve it). A sweep in bf16 gave conserving-reference 12-56x fp32's relevance sum, fp16 NaN."""
    info, model = unet
    image, _ = factories.defect_image(128)
    x = info.normalize(torch.from_numpy(image).float()[None, None] / 255)  # as a decoded 8-bit image
    ref = explain(model, x, target="class", cls=1, rules=rules, bounds=info.zbox_bounds)
    low = explain(model, x, target="class", cls=1, rules=rules, bounds=info.zbox_bounds, precision=DTYPES[precision])
    assert not torch.equal(low.logits, ref.logits)  # the forward did run in the low format
    assert low.relevance.dtype == torch.float32 and torch.isfinite(low.relevance).all()
    assert abs(float(low.relevance.sum() / ref.relevance.sum()) - 1) < 0.05  # bf16: a few explained pixels flip
    assert float((low.relevance - ref.relevance).abs().max() / ref.relevance.abs().max()) < 0.25
    assert float(low.conservation[0]) == pytest.approx(float(ref.conservation[0]), abs=0.02)


def test_an_fp16_overflow_is_named_not_propagated(unet) -> None:
    info, model = unet
    image, _ = factories.defect_image(64)
    x = info.normalize(torch.from_numpy(image).float()[None, None])  # 0-255 where the model expects 0-1
    with pytest.raises(PrecisionError, match="overflowed in float16"):
        explain(model, x, target="class", cls=1, rules="ours", bounds=info.zbox_bounds, precision=torch.float16)


def test_logits_are_widened_and_checked_only_from_low_formats() -> None:
    finite = torch.ones(2, dtype=torch.float16)
    assert widened_logits(finite, torch.float16).dtype == torch.float32
    overflowed = torch.tensor([1.0, float("inf")])
    assert torch.equal(widened_logits(overflowed, torch.float32), overflowed)  # fp32: as the model gave them
    with pytest.raises(PrecisionError, match="overflowed in bfloat16"):
        widened_logits(overflowed.bfloat16(), torch.bfloat16)


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
