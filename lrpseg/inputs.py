"""The one input path: raw upload bytes + params + model -> decoded, checked inputs, params resolved once.

The API runs it to refuse a bad submission (mapping `InputError` to problem+json), the worker
runs it on the stored upload (mapping it to the job error `bad_input`); both get the same
checks in the same order: params against the model, decode, image against the model and the
params, ground truth against the image. The pass (`pipeline.forward_batch`, `pipeline.finish`)
takes only `ResolvedParams`, which only `resolve_params` makes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lrpseg.io import DecodedImage, ImageDecodeError, decode_image
from lrpseg.registry import ModelInfo

if TYPE_CHECKING:
    from schemas.params import JobParams


class InputError(ValueError):
    """An input that cannot be used. `field` names it (image, ground_truth, params.target.cls, ...);
    `status` and `code` are what an HTTP API answers (422 invalid-input unless decoding said otherwise);
    `detail` is the sentence without the field."""

    def __init__(self, field: str, detail: str, *, status: int = 422, code: str = "invalid-input") -> None:
        super().__init__(detail)
        self.field = field
        self.detail = detail
        self.status = status
        self.code = code


class ParamsError(InputError):
    """The params do not fit the model or the image; `field` names the culprit (params.target.cls)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message)


@dataclass(frozen=True)
class ResolvedParams:
    """Params with what depends on the model filled in (its full id, the target class as an index).
    Made only by `resolve_params`: the pass refuses plain JobParams."""

    params: JobParams
    model_id: str


@dataclass(frozen=True)
class DecodeLimits:
    max_pixels: int
    max_side: int


@dataclass(frozen=True)
class RawInput:
    """An uploaded file as it came: bytes, and the name and media type the client gave."""

    data: bytes
    filename: str | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class JobInputs:
    """Decoded, checked inputs of one job: what the pipeline takes."""

    info: ModelInfo
    params: ResolvedParams
    image: DecodedImage
    truth: np.ndarray | None  # bool (H, W): pixels of the target class, or None

    @property
    def shape(self) -> tuple[int, int, int]:
        """The image's (C, H, W): what batches are grouped by."""
        return (self.image.channels, self.image.height, self.image.width)


def resolve_params(params: JobParams, info: ModelInfo) -> ResolvedParams:
    """Fill in what depends on the model: its full id and the target class as an index."""
    target = params.target
    cls = target.cls
    if isinstance(cls, str):
        if cls not in info.class_names:
            raise ParamsError("params.target.cls", f"model {info.id} has no class {cls!r}; classes: {info.class_names}")
        cls = info.class_names.index(cls)
    elif cls is None and info.kind == "segmenter" and target.kind != "all":
        cls = 1 if info.num_classes > 1 else 0
    if cls is not None and not 0 <= cls < info.num_classes:
        raise ParamsError("params.target.cls", f"class {cls} out of range: model {info.id} has {info.num_classes}")
    if info.kind == "classifier" and target.kind in ("region", "region-normalized"):
        raise ParamsError("params.target.kind", f"model {info.id} is a classifier; a region target needs a segmenter")
    if target.kind == "all" and cls is not None:
        raise ParamsError("params.target.cls", "target kind 'all' explains every class; leave cls out")
    resolved = params.model_copy(update={"model": info.id, "target": target.model_copy(update={"cls": cls})})
    return ResolvedParams(resolved, info.id)


def check_resolved(params: ResolvedParams, info: ModelInfo) -> JobParams:
    """The params inside, after making sure they were resolved for this model."""
    if not isinstance(params, ResolvedParams):
        raise TypeError(f"the pass takes ResolvedParams (lrpseg.inputs.resolve_params), not {type(params).__name__}")
    if params.model_id != info.id:
        raise ValueError(f"params were resolved for model {params.model_id}, not {info.id}")
    return params.params


def check_image(params: JobParams, info: ModelInfo, channels: int, height: int, width: int) -> None:
    """Channels and size against the model, boxes against the image."""
    if channels != info.in_channels:
        raise ParamsError("image", f"the image has {channels} channel(s); model {info.id} takes {info.in_channels}")
    size = info.input_size
    if size is not None and (height, width) != (size, size) and not params.resize:
        raise ParamsError(
            "image",
            f"model {info.id} takes {size}x{size} images, got {width}x{height}; send params.resize=true "
            "to have it resized",
        )
    for i, box in enumerate(params.target.region or []):
        if box.x1 > width or box.y1 > height:
            raise ParamsError(f"params.target.region.{i}", f"box reaches past the {width}x{height} image")


def decode_input(raw: RawInput, field: str, limits: DecodeLimits, frame: int | None) -> DecodedImage:
    """`decode_image` with the failure named by field (InputError keeps the decoder's status and code)."""
    try:
        return decode_image(
            raw.data,
            filename=raw.filename,
            content_type=raw.content_type,
            max_pixels=limits.max_pixels,
            max_side=limits.max_side,
            frame=frame,
        )
    except ImageDecodeError as exc:
        raise InputError(field, exc.detail, status=exc.status, code=exc.code) from None


def prepare_inputs(
    info: ModelInfo,
    params: JobParams,
    image: RawInput,
    ground_truth: RawInput | None,
    limits: DecodeLimits,
) -> JobInputs:
    """Resolve the params against the model, decode the image and the ground truth, check them all.
    InputError (ParamsError for the params) names the field at fault."""
    resolved = resolve_params(params, info)
    decoded = decode_input(image, "image", limits, resolved.params.frame)
    check_image(resolved.params, info, decoded.channels, decoded.height, decoded.width)
    truth = None
    if ground_truth is not None:
        gt = decode_input(ground_truth, "ground_truth", limits, None)
        if (gt.height, gt.width) != (decoded.height, decoded.width):
            raise ParamsError(
                "ground_truth",
                f"ground truth is {gt.width}x{gt.height}; the image is {decoded.width}x{decoded.height}",
            )
        truth = gt.array.max(axis=0) > 0
    return JobInputs(info, resolved, decoded, truth)
