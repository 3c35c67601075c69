"""The one input path: raw upload bytes + params + model -> decoded, checked inputs, params resolved once.

The API runs it to refuse a bad submission (mapping `InputError` to problem+json), the worker
runs it on the stored upload (mapping it to the job error `bad_input`); both get the same
checks in the same order: params against the model, decode, read the values as params.input says
(bit depth, window, colour: lrpseg.io.levels), image against the model and the params, ground
truth against the image. The pass (`pipeline.forward_batch`, `pipeline.finish`)
takes only `ResolvedParams`, which only `resolve_params` makes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pydantic import ValidationError

from lrpseg.io import DecodedImage, ImageDecodeError, decode_image
from lrpseg.io.levels import InputLevels, LevelsError, apply_levels
from lrpseg.registry import ModelInfo

if TYPE_CHECKING:
    from schemas.params import InputParams, JobParams


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
    max_voxels: int


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
    def shape(self) -> tuple[int, ...]:
        """The image's (C, H, W), a volume's (C, D, H, W): what batches are grouped by."""
        return self.image.shape


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
    update = {"model": info.id, "target": target.model_copy(update={"cls": cls}), "input": resolve_input(params, info)}
    return ResolvedParams(params.model_copy(update=update), info.id)


SCALES = ("bits", "window")  # how values become [0, 1]: one of them, the most specific source wins


def resolve_input(params: JobParams, info: ModelInfo) -> InputParams:
    """params.input over the model's defaults; channels "reject" unless set.

    One window concept: a window (or bit depth) in the request wins; else the model's config.json
    "input" (bits or window); else its clinical metadata "input_window"; else the decoder's own
    scaling (DICOM VOI LUT / window, else min-max or the container's range)."""
    from schemas.params import InputParams

    request = params.input.model_dump(exclude_unset=True)
    defaults = dict(info.input_defaults)
    window = info.metadata.input_window
    if window is not None and not any(k in defaults for k in SCALES):
        defaults["window"] = {"centre": window.center, "width": window.width}
    if any(request.get(k) is not None for k in SCALES):  # the request's scale replaces the model's
        defaults = {k: v for k, v in defaults.items() if k not in SCALES}
    merged = {"channels": "reject", **defaults, **request}
    if merged["channels"] is None:
        merged["channels"] = "reject"
    try:
        return InputParams.model_validate(merged)
    except ValidationError as exc:
        raise ParamsError("params.input", f"with model {info.id}'s input defaults: {exc.errors()[0]['msg']}") from None


def apply_input(image: DecodedImage, params: JobParams, info: ModelInfo) -> DecodedImage:
    """The decoded image read as (resolved) params.input says: bit depth or window, RGB -> one
    channel; with a warning when it uses little of its range (lrpseg.io.levels)."""
    levels = params.input
    window = (levels.window.centre, levels.window.width) if levels.window is not None else None
    try:
        return apply_levels(image, InputLevels(levels.bits, window, levels.channels or "reject"), info.in_channels)
    except LevelsError as exc:
        raise ParamsError(exc.field, str(exc)) from None


def check_resolved(params: ResolvedParams, info: ModelInfo) -> JobParams:
    """The params inside, after making sure they were resolved for this model."""
    if not isinstance(params, ResolvedParams):
        raise TypeError(f"the pass takes ResolvedParams (lrpseg.inputs.resolve_params), not {type(params).__name__}")
    if params.model_id != info.id:
        raise ValueError(f"params were resolved for model {params.model_id}, not {info.id}")
    return params.params


def check_image(
    params: JobParams, info: ModelInfo, channels: int, height: int, width: int, depth: int | None = None
) -> None:
    """Channels, size and 2-D/3-D against the model, boxes against the image (`depth`: a volume's slices)."""
    check_dims(params, info, depth)
    if channels != info.in_channels:
        hint = ' (send params.input.channels "luminance" or "first" to convert RGB)' if channels == 3 else ""
        raise ParamsError(
            "image", f"the image has {channels} channel(s); model {info.id} takes {info.in_channels}{hint}"
        )
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


def check_dims(params: JobParams, info: ModelInfo, depth: int | None) -> None:
    """A 3-D model needs a volume; a 2-D segmenter takes an image, or a volume slice by slice; volumes
    take one-pass LRP (class/all targets) or plain segmentation only."""
    slice_wise = info.spatial_dims == 2 and info.kind == "segmenter" and info.input_size is None
    if (depth is None and info.spatial_dims == 3) or (depth is not None and info.spatial_dims == 2 and not slice_wise):
        got = f"a volume of {depth} slices" if depth is not None else "a 2-D image"
        takes = "volumes (NIfTI, a DICOM series, 3-D .npy)" if info.spatial_dims == 3 else "2-D images"
        raise ParamsError("image", f"model {info.id} takes {takes}; got {got}")
    if depth is None:
        return
    if params.method.value != "lrp":
        raise ParamsError("params.method", f"volumes are explained with LRP only, not {params.method.value!r}")
    if params.target.kind not in ("class", "all"):
        raise ParamsError("params.target.kind", f"target kind {params.target.kind!r} needs a 2-D image")
    if info.spatial_dims == 2 and params.faithfulness:
        raise ParamsError("params.faithfulness", "faithfulness is not measured on a volume explained slice by slice")


def domain_mismatch(info: ModelInfo, image: DecodedImage) -> str | None:
    """Why the input lies outside the model's declared domain (its DICOM Modality), or None.

    Only inputs that say what they are can contradict a domain: DICOM (single or series) with
    a Modality. PNG, JPEG, TIFF, .npy and NIfTI carry no modality and are never refused here.
    """
    domain = info.metadata.domain
    if domain is None or image.modality is None or image.modality in domain.modalities:
        return None
    about = f" ({domain.description})" if domain.description else ""
    return (
        f"the image is DICOM modality {image.modality}; model {info.id} is made for "
        f"modalities {list(domain.modalities)}{about}"
    )


def check_domain(params: JobParams, info: ModelInfo, image: DecodedImage) -> None:
    problem = domain_mismatch(info, image)
    if problem is not None and not params.allow_domain_mismatch:
        raise ParamsError("image", f"{problem}; send params.allow_domain_mismatch=true to run it anyway")


def check_input(params: JobParams, info: ModelInfo, image: DecodedImage) -> None:
    """Everything `check_image` checks, plus the model's declared domain; `params` resolved."""
    check_image(params, info, image.channels, image.height, image.width, image.depth)
    check_domain(params, info, image)


def decode_input(raw: RawInput, field: str, limits: DecodeLimits, frame: int | None) -> DecodedImage:
    """`decode_image` with the failure named by field (InputError keeps the decoder's status and code)."""
    try:
        return decode_image(
            raw.data,
            filename=raw.filename,
            content_type=raw.content_type,
            max_pixels=limits.max_pixels,
            max_side=limits.max_side,
            max_voxels=limits.max_voxels,
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
    decoded = apply_input(decode_input(image, "image", limits, resolved.params.frame), resolved.params, info)
    check_input(resolved.params, info, decoded)
    truth = None
    if ground_truth is not None:
        gt = decode_input(ground_truth, "ground_truth", limits, None)
        if gt.shape[1:] != decoded.shape[1:]:
            size, image_size = ("x".join(map(str, d.shape[:0:-1])) for d in (gt, decoded))
            raise ParamsError("ground_truth", f"ground truth is {size}; the image is {image_size}")
        truth = gt.array.max(axis=0) > 0
    return JobInputs(info, resolved, decoded, truth)
