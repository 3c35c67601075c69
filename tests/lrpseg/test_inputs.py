"""The one input path (lrpseg.inputs): params resolved once, decode, checks; errors name the field."""

from __future__ import annotations

import numpy as np
import pytest

from lrpseg.inputs import (
    DecodeLimits,
    InputError,
    ParamsError,
    RawInput,
    ResolvedParams,
    prepare_inputs,
    resolve_params,
)
from lrpseg.io import decode_image
from lrpseg.pipeline import finish, forward_batch, run_prepared
from lrpseg.registry import ModelInfo, Registry
from schemas.params import JobParams
from tests.service import factories

LIMITS = DecodeLimits(max_pixels=256 * 256, max_side=256)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return factories.write_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def info(registry: Registry) -> ModelInfo:
    return registry.get(factories.SEGMENTER)


def png(size: int = 64) -> tuple[bytes, bytes]:
    image, truth = factories.defect_image(size)
    return factories.png_bytes(image), factories.png_bytes((truth * 255).astype(np.uint8))


def test_prepare_decodes_checks_and_resolves_once(info: ModelInfo) -> None:
    image, truth = png()
    inputs = prepare_inputs(info, JobParams(), RawInput(image, "a.png"), RawInput(truth, "t.png"), LIMITS)
    assert isinstance(inputs.params, ResolvedParams) and inputs.params.model_id == info.id
    assert inputs.params.params.model == info.id and inputs.params.params.target.cls == 1  # the defect class
    assert inputs.shape == (1, 64, 64)
    expected = decode_image(truth).array.max(axis=0) > 0
    assert inputs.truth is not None and inputs.truth.dtype == bool and np.array_equal(inputs.truth, expected)


@pytest.mark.parametrize(
    ("params", "image", "truth", "field", "status"),
    [
        (JobParams(target={"cls": "nope"}), png()[0], None, "params.target.cls", 422),
        (JobParams(), b"not an image", None, "image", 400),
        (JobParams(), png(300)[0], None, "image", 413),  # past max_side
        (JobParams(), png()[0], png(32)[1], "ground_truth", 422),
        (
            JobParams(target={"kind": "region", "region": [{"x0": 0, "y0": 0, "x1": 80, "y1": 8}]}),
            png()[0],
            None,
            "params.target.region.0",
            422,
        ),
    ],
)
def test_errors_name_the_field(
    info: ModelInfo, params: JobParams, image: bytes, truth: bytes | None, field: str, status: int
) -> None:
    with pytest.raises(InputError) as caught:
        prepare_inputs(info, params, RawInput(image), None if truth is None else RawInput(truth), LIMITS)
    assert caught.value.field == field and caught.value.status == status
    assert isinstance(caught.value, ValueError)  # the worker's bad_input


def test_a_resolve_error_is_a_params_error(info: ModelInfo) -> None:
    with pytest.raises(ParamsError, match="no class"):
        resolve_params(JobParams(target={"cls": "nope"}), info)


def test_the_pass_takes_only_resolved_params(registry: Registry, info: ModelInfo) -> None:
    model = registry.load(factories.SEGMENTER)
    inputs = prepare_inputs(info, JobParams(masks=[]), RawInput(png()[0]), None, LIMITS)
    with pytest.raises(TypeError, match="ResolvedParams"):
        forward_batch(model, info, [inputs.image], inputs.params.params)  # type: ignore[arg-type]
    (forwarded,) = forward_batch(model, info, [inputs.image], inputs.params)
    with pytest.raises(TypeError, match="ResolvedParams"):
        finish(info, inputs.image, inputs.params.params, forwarded)  # type: ignore[arg-type]
    result = run_prepared(model, inputs).result
    assert result["model"]["id"] == info.id and result["params"]["target"]["cls"] == 1
