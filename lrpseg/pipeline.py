"""One job, start to end, as library code: forward -> explanation -> masks -> metrics -> artifacts.

No Redis, no HTTP: the service's workers call `forward_batch` + `finish` on inputs that
`lrpseg.inputs.prepare_inputs` decoded and checked, a notebook calls `run_job`. The params are
the service's validated `schemas.params.JobParams` (a plain pydantic model; `JobParams()` gives
the defaults); the pass takes them resolved against the model (`lrpseg.inputs.ResolvedParams`). The result is JSON-safe (no NaN: undefined numbers are None).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lrpseg import __version__ as lrpseg_version
from lrpseg import lrp, render
from lrpseg import masks as mask_extractors
from lrpseg import metrics as metric_fns
from lrpseg.inputs import (
    JobInputs,
    ResolvedParams,
    apply_input,
    check_input,
    check_resolved,
    domain_mismatch,
    resolve_params,
)
from lrpseg.io import DecodedImage
from lrpseg.io.dicom_labels import EXPLANATION_CATEGORY, RELEVANT_REGION, OutputLabels
from lrpseg.lrp import explain, prepare, seg_grad_cam
from lrpseg.lrp.targets import all_classes_mask, predicted_class_mask, region_mask
from lrpseg.metrics import faithfulness
from lrpseg.metrics.errors import InvalidScoreError
from lrpseg.precision import check_precision, forward_precision, widened_logits
from lrpseg.registry import ModelInfo
from lrpseg.render.encoding import Pending, PngEncoder
from lrpseg.render.montage import montage_slices, tile
from lrpseg.rule_specs import make_rule

if TYPE_CHECKING:
    from schemas.params import JobParams

Progress = Callable[[str, float], None]
STAGE_START = {"forward": 0.05, "lrp": 0.2, "faithfulness": 0.4, "masks": 0.55, "metrics": 0.7, "render": 0.8}
SERIES_BASE = 1000  # DICOM SeriesNumber base of the outputs (lrpseg.io.dicom_labels; LRPSEG_DICOM_SERIES_BASE)
MEDIA_TYPES = {".png": "image/png", ".npy": "application/octet-stream", ".dcm": "application/dicom"}


@dataclass
class PipelineResult:
    result: dict[str, Any]
    artifacts: dict[str, bytes] = field(default_factory=dict)


# ---- helpers ----------------------------------------------------------------------------------


def finite(value: Any) -> float | None:
    """A float for JSON, None for NaN/inf/None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def clean(values: dict[str, Any]) -> dict[str, Any]:
    return {k: finite(v) if isinstance(v, (int, float, np.floating, np.integer)) else v for k, v in values.items()}


class Clock:
    """Per-stage wall time in ms; waits for the GPU so each time is its stage's own."""

    def __init__(self, device: torch.device, progress: Progress | None) -> None:
        self.device, self.progress = device, progress
        self.ms: dict[str, float] = {}
        self._open: tuple[str, float] | None = None

    def start(self, name: str, *, report: bool = True) -> None:
        """Close the open stage (if any) and open `name` (a stage opened again adds to its time;
        report False: no progress report, for a stage's early part)."""
        self.stop()
        if self.progress is not None and report:
            self.progress(name, STAGE_START[name])
        self._open = (name, time.perf_counter())

    def stop(self) -> None:
        if self._open is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        name, start = self._open
        self.ms[name] = round(self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1000, 3)
        self._open = None

    @contextmanager
    def stage(self, name: str, *, report: bool = True) -> Iterator[None]:
        self.start(name, report=report)
        yield
        self.stop()


def input_window(params: JobParams) -> dict[str, float] | None:
    """The window the image was read through (params.input, resolved over the model's default)."""
    window = params.input.window
    return None if window is None else {"center": window.centre, "width": window.width}


def to_input(image: DecodedImage, info: ModelInfo, params: JobParams, device: torch.device) -> tuple[Tensor, Tensor]:
    """(pixels in [0, 1], model input), both (1, C, H, W) (volumes: (1, C, D, H, W)), resized for
    fixed-size classifiers if asked."""
    x01 = torch.from_numpy(np.ascontiguousarray(image.array)).unsqueeze(0).to(device)
    size = info.input_size
    if size is not None and not image.is_volume and x01.shape[-2:] != (size, size):
        x01 = F.interpolate(x01, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    return x01, info.normalize(x01)


def resize_truth(truth: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if truth.shape == shape:
        return truth
    t = torch.from_numpy(truth.astype(np.float32))[None, None]
    return F.interpolate(t, size=shape, mode="nearest")[0, 0].numpy() > 0.5


def region_of(params: JobParams, shape: tuple[int, int]) -> Tensor | None:
    if not params.target.region:
        return None
    region = torch.zeros(shape, dtype=torch.bool)
    for box in params.target.region:
        region[box.y0 : box.y1, box.x0 : box.x1] = True
    return region


def build_rules(params: JobParams, model: nn.Module, x: Tensor, bounds: tuple[float, float]) -> str | dict[str, Any]:
    """The composite's name, or its rule map with the requested per-layer overrides applied."""
    overrides = params.lrp.rules
    if not overrides:
        return params.lrp.composite.value
    resolved = dict(prepare(model, x).resolve(params.lrp.composite.value, bounds))
    for name, spec in overrides.items():
        resolved[name] = make_rule(spec.model_dump(), bounds)
    return resolved


def target_class(params: JobParams) -> int | None:
    """The target class as an index: resolved params never carry a class name."""
    cls = params.target.cls
    if isinstance(cls, str):
        raise TypeError(f"target.cls {cls!r} is a name: the params were not resolved (lrpseg.inputs.resolve_params)")
    return cls


def spatial_size(t: Tensor) -> tuple[int, int]:
    """(H, W) of a (..., H, W) tensor."""
    return int(t.shape[-2]), int(t.shape[-1])


def zbox_bounds(info: ModelInfo) -> tuple[float, float]:
    low, high = info.zbox_bounds
    return float(low), float(high)


def explained_mask(params: JobParams, logits: Tensor) -> Tensor:
    """The explained pixel set on the output (logits' shape), as the LRP targets define it."""
    kind, cls = params.target.kind, target_class(params)
    if kind == "all":
        return all_classes_mask(logits)
    if kind == "class":
        return predicted_class_mask(logits, cls)
    region = region_of(params, spatial_size(logits))
    assert region is not None and cls is not None
    return region_mask(logits, cls, region)


def transfer_args(params: JobParams) -> dict[str, Any]:
    """The visualisation params as lrpseg.render's transfer keywords."""
    vis = params.visualisation
    return {"mode": vis.transfer, vis.threshold_mode: vis.threshold}


def display_scale(rel2d: np.ndarray, params: JobParams) -> dict[str, float | None]:
    """How the PNGs were scaled: per-image max |R| (transfer value +-1), the threshold tau in
    relevance units, and the share of pixels it leaves coloured (the rule is in params.visualisation)."""
    peak = float(np.abs(rel2d).max())
    if peak == 0.0 or not math.isfinite(peak):
        return {"max_abs": None, "tau": None, "coloured_share": 0.0}
    kw = transfer_args(params)
    mode = kw.pop("mode")
    tau = render.resolve_tau(rel2d, **kw) if mode == "log" else None
    share = render.coloured_share(rel2d, tau) if tau is not None else float(np.mean(rel2d != 0))
    return {"max_abs": peak, "tau": tau, "coloured_share": share}


def picture_transfer(params: JobParams, display: dict[str, float | None]) -> dict[str, Any]:
    """The transfer keywords of a job's pictures, with the threshold display_scale resolved: finding
    tau sorts the map, so the pictures, the colour bar and the summary share one."""
    kw = transfer_args(params)
    return kw if display["tau"] is None else {"mode": kw["mode"], "tau": display["tau"]}


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


# ---- the job ----------------------------------------------------------------------------------


@dataclass
class Explained:
    method: str
    relevance: np.ndarray  # (C, H, W) float32; CAM: (1, H, W)
    summary: dict[str, Any]
    pixel_set: np.ndarray  # bool (H, W): where the explained output lies
    on_device: Tensor | None = None  # the same relevance on the worker's device: masks and pictures run there

    def summed(self) -> Tensor:
        """The channel-summed relevance (H, W) (volumes (D, H, W)) in float64, on the worker's device."""
        source = self.on_device if self.on_device is not None else torch.from_numpy(self.relevance)
        return source.sum(0, dtype=torch.float64)


def ratio(a: float, b: float) -> float | None:
    return finite(a / b) if b != 0 else None


def lrp_summary(
    params: JobParams,
    info: ModelInfo,
    relevance: Tensor,
    r_out: Tensor,
    reference: float,
    bias: float,
    stabilizer: float,
    mask: Tensor,
    index: int = 0,
) -> Explained:
    """Sample `index` of an LRP result as Explained; conservation, bias and stabiliser shares relative to
    `reference` (for class, region and all targets the three add up to 1)."""
    on_device = relevance[index].detach().float()
    rel = on_device.cpu().numpy()
    pixel_set = (mask[index] != 0).any(0).cpu().numpy() if mask.dim() > 2 else np.ones(rel.shape[1:], bool)
    total = float(rel.sum(dtype=np.float64))
    per_channel = rel.reshape(rel.shape[0], -1).sum(1, dtype=np.float64)
    summary = {
        **target_summary(params, info),
        "method": "lrp",
        "composite": params.lrp.composite.value,
        "rule_overrides": sorted(params.lrp.rules) if params.lrp.rules else None,
        "explained_pixels": int(pixel_set.sum()),
        "relevance_sum": finite(total),
        "r_out_sum": finite(r_out[index].sum().item()),
        "conservation": ratio(total, reference),
        "bias_share": ratio(bias, reference),
        "stabilizer_share": ratio(stabilizer, reference),
        "channel_shares": [ratio(float(v), total) if total else 0.0 for v in per_channel],
    }
    return Explained("lrp", rel, summary, pixel_set, on_device)


def target_summary(params: JobParams, info: ModelInfo) -> dict[str, Any]:
    cls = target_class(params)
    return {"target": params.target.kind, "cls": cls, "cls_name": info.class_names[cls] if cls is not None else None}


def one_pass(params: JobParams) -> bool:
    """LRP whose forward pass also gives the segmentation (all but region-normalized, which needs
    the per-location totals that `explain` computes)."""
    return params.task.value == "explain" and params.method.value == "lrp" and params.target.kind != "region-normalized"


def forward_and_lrp(
    model: nn.Module,
    info: ModelInfo,
    x: Tensor,
    params: JobParams,
    forward_done: Callable[[], None],
    precision: torch.dtype = torch.float32,
) -> tuple[Tensor, list[Explained]]:
    """One recorded forward pass and one LRP sweep over the batch `x`: (logits, one explanation per sample).

    The initial relevance is built from the logits inside the pass (`lrp.run` takes it as a
    function), where `forward_done` marks the end of the forward stage. Every LRP quantity is
    per sample (relative epsilon, z^B bounds, targets), so a batch equals its images one by one.
    """
    p, mask = lrp_pass(model, info, x, params, forward_done, precision)
    stab = p.stabilizer.tolist() if p.stabilizer is not None else [0.0] * x.shape[0]
    explained = [
        lrp_summary(params, info, p.relevance, p.r_out, p.r_out[i].sum().item(), p.bias[i].item(), stab[i], mask, i)
        for i in range(x.shape[0])
    ]
    return p.logits.detach(), explained


def lrp_pass(
    model: nn.Module,
    info: ModelInfo,
    x: Tensor,
    params: JobParams,
    forward_done: Callable[[], None],
    precision: torch.dtype = torch.float32,
) -> tuple[lrp.Propagation, Tensor]:
    """The recorded forward pass (in `precision`) and the LRP sweep over `x`; the propagation and the
    explained mask."""
    bounds = zbox_bounds(info)
    rules = build_rules(params, model, x, bounds)
    seen: dict[str, Tensor] = {}

    def r_out(logits: Tensor) -> Tensor:
        forward_done()
        seen["mask"] = explained_mask(params, logits)
        return logits * seen["mask"]

    return lrp.run(model, x, r_out, rules, bounds, precision), seen["mask"]


def forward_slices(
    model: nn.Module,
    info: ModelInfo,
    image: DecodedImage,
    params: JobParams,
    *,
    progress: Progress | None,
    device: torch.device,
    precision: torch.dtype = torch.float32,
) -> Forwarded:
    """A volume through a 2-D segmenter, slice by slice: the D slices as one batch of images (every
    LRP quantity is per sample, so each slice is explained exactly as on its own), put back together
    as the volume's logits and relevance; the explanation's sums are those of the slices."""
    clock = Clock(device, progress)
    clock.start("forward")
    x01 = torch.from_numpy(np.ascontiguousarray(image.array)).movedim(1, 0).to(device)  # (D, C, H, W)
    x = info.normalize(x01)

    def volume(t: Tensor) -> Tensor:  # (D, K, H, W) -> (1, K, D, H, W)
        return t.movedim(0, 1).unsqueeze(0)

    explained = None
    if one_pass(params):
        p, mask = lrp_pass(model, info, x, params, lambda: clock.start("lrp"), precision)
        logits = p.logits.detach()
        stab = float(p.stabilizer.sum().item()) if p.stabilizer is not None else 0.0
        reference, bias = p.r_out.sum().item(), p.bias.sum().item()
        explained = lrp_summary(
            params, info, volume(p.relevance), volume(p.r_out), reference, bias, stab, volume(mask), 0
        )
    else:  # task "segment": volumes are explained by one-pass LRP only (lrpseg.inputs.check_dims)
        with torch.no_grad(), forward_precision(device, precision):
            logits = widened_logits(model(x), precision)
    clock.stop()
    return Forwarded(volume(x01), volume(logits.float()), explained, dict(clock.ms), 1)


def run_explanation(
    model: nn.Module,
    info: ModelInfo,
    x: Tensor,
    logits: Tensor,
    params: JobParams,
    precision: torch.dtype = torch.float32,
) -> Explained:
    """The explanation after a separate forward pass: region-normalized LRP and the CAM baselines
    (their forward and backward passes under autocast in bf16/fp16, like the model's forward)."""
    target, cls = params.target, target_class(params)
    if params.method.value == "lrp":
        bounds = zbox_bounds(info)
        rules = build_rules(params, model, x, bounds)
        region = region_of(params, spatial_size(x))
        e = explain(
            model, x, target=target.kind, cls=cls, region=region, rules=rules, bounds=bounds, precision=precision
        )
        # explain's reference: each explained location contributes 1 (region-normalized), else Σ r_out
        reference = float(e.mask[0].sum()) if target.kind == "region-normalized" else e.r_out[0].sum().item()
        bias, stab = e.bias_share[0].item() * reference, e.stabilizer_share[0].item() * reference
        return lrp_summary(params, info, e.relevance, e.r_out, reference, bias, stab, e.mask)
    mask = explained_mask(params, logits)
    variant: Literal["grad", "hires"] = "grad" if params.method.value == "seg-grad-cam" else "hires"
    with forward_precision(x.device, precision):
        cam = seg_grad_cam(model, x, mask, layer=params.cam_layer, variant=variant)
    relevance = cam[0].detach().float().cpu().numpy()[None]
    pixel_set = (mask[0] != 0).any(0).cpu().numpy() if mask.dim() == 4 else np.ones(x.shape[-2:], bool)
    summary = {
        **target_summary(params, info),
        "method": params.method.value,
        "explained_pixels": int(pixel_set.sum()),
        "relevance_sum": finite(relevance.sum(dtype=np.float64)),
    }
    return Explained(params.method.value, relevance, summary, pixel_set)


def warm_up(model: nn.Module, info: ModelInfo, device: torch.device | str = "cpu") -> None:
    """One small forward and LRP pass, so the first job does not pay for tracing and kernel set-up,
    and the one-time import behind large images' windowed sweep (PreparedModel.shapes)."""
    side = info.input_size or (16 if info.spatial_dims == 3 else 32)
    x = info.normalize(torch.full((1, info.in_channels, *(side,) * info.spatial_dims), 0.5, device=device))
    cls = None if info.kind == "classifier" else min(1, info.num_classes - 1)
    with torch.no_grad():
        model(x)
    explain(model, x, target="class", cls=cls, rules="ours", bounds=zbox_bounds(info))
    if x.dim() == 4:  # 2-D networks: the ones whose sweep may run in windows
        prepare(model, x).shapes(x)


def quality_metrics(explained: Explained) -> dict[str, float | None]:
    """Mass inside the explained pixel set, pointing game, negative share (the sums and shares are
    already in the explanation summary). None of them is spatial, so a volume's (C, D, H, W)
    relevance is measured as the (C, D*H, W) map of its stacked slices."""
    relevance, pixel_set = explained.relevance, explained.pixel_set
    if relevance.ndim == 4:
        c, d, h, w = relevance.shape
        relevance, pixel_set = relevance.reshape(c, d * h, w), pixel_set.reshape(d * h, w)
    found = metric_fns.explanation_metrics(relevance, pixel_set)
    return clean({k: v for k, v in found.items() if k not in ("relevance_sum", "conservation", "channel_shares")})


def seg_metrics(pred: np.ndarray, ref: np.ndarray) -> dict[str, float | None]:
    return clean(metric_fns.segmentation_metrics(pred, ref))


@dataclass
class Forwarded:
    """One image's share of a (possibly batched) forward + explanation pass: the input to `finish`."""

    x01: Tensor  # (1, C, H, W) / (1, C, D, H, W) pixels in [0, 1], as the model saw them (resized, windowed)
    logits: Tensor  # (1, K, H, W), (1, K, D, H, W) or (1, K)
    explained: Explained | None
    ms: dict[str, float]  # wall time of the shared pass per stage (forward, lrp)
    batch_size: int  # images that shared the pass


def forward_batch(
    model: nn.Module,
    info: ModelInfo,
    images: list[DecodedImage],
    resolved: ResolvedParams,
    *,
    progress: Progress | None = None,
    device: torch.device | str | None = None,
) -> list[Forwarded]:
    """The forward pass and the explanation for images of one shape that share `params`, in one batch.

    Only `params.task`, `.method`, `.lrp`, `.target`, `.cam_layer` and `.resize` matter here
    (`batch_params`); masks, visualisation and artifacts are each image's own, in `finish`.
    One-pass LRP and plain segmentation run as one batch; region-normalized LRP and the CAM
    baselines explain image by image after one batched forward pass.
    """
    params = check_resolved(resolved, info)
    if not images:
        return []
    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = check_precision(params.precision.value, device)  # bf16/fp16: CUDA only
    if info.spatial_dims == 2 and images[0].is_volume:  # a 2-D segmenter explains a volume slice by slice
        for image in images:
            check_input(params, info, image)
        return [
            forward_slices(model, info, image, params, progress=progress, device=device, precision=dtype)
            for image in images
        ]
    shape = images[0].shape
    for image in images:
        check_input(params, info, image)
        if image.shape != shape:
            raise ValueError(f"a batch needs images of one size (C, H, W): {shape} and {image.shape}")
    clock = Clock(device, progress)
    clock.start("forward")
    inputs = [to_input(image, info, params, device) for image in images]
    x01 = torch.cat([a for a, _ in inputs])
    x = torch.cat([b for _, b in inputs])
    explained: list[Explained | None] = [None] * len(images)
    if one_pass(params):
        logits, found = forward_and_lrp(model, info, x, params, lambda: clock.start("lrp"), dtype)
        explained = list(found)
    else:
        with torch.no_grad(), forward_precision(device, dtype):
            logits = widened_logits(model(x), dtype)
        if params.task.value == "explain":
            clock.start("lrp")
            explained = [
                run_explanation(model, info, x[i : i + 1], logits[i : i + 1], params, dtype) for i in range(len(images))
            ]
    if params.faithfulness:
        clock.start("faithfulness")
        for i, e in enumerate(explained):
            # perturbation curves in fp32 whatever the forward's precision
            x_i, logits_i = x[i : i + 1], logits[i : i + 1]
            curves = None if e is None else faithfulness_summary(model, x_i, logits_i, e, params)
            if e is not None and curves is not None:
                e.summary["faithfulness"] = curves
    clock.stop()
    logits = logits.float()
    return [
        Forwarded(x01[i : i + 1], logits[i : i + 1], explained[i], dict(clock.ms), len(images))
        for i in range(len(images))
    ]


def faithfulness_summary(
    model: nn.Module, x: Tensor, logits: Tensor, explained: Explained, params: JobParams
) -> dict[str, Any] | None:
    """Deletion / insertion curves of the explained output for the map, a random order and the gradient;
    None when the explained output is 0 (nothing predicted as the class): no curve to normalise."""
    mask = explained_mask(params, logits).detach()

    def score(output: Tensor) -> Tensor:
        return (output * mask).flatten(1).sum(1)

    try:
        runs = faithfulness.with_baselines(model, x.detach(), explained.relevance, score)
    except InvalidScoreError:
        return None
    keys = ("deletion", "insertion", "deletion_auc", "insertion_auc", "difference")
    first = runs["explanation"]
    return {
        "steps": first["steps"],
        "baseline": first["baseline"],
        "fractions": first["fractions"],
        **{name: clean({k: run[k] for k in keys}) for name, run in runs.items()},
    }


def batch_params(params: JobParams) -> dict[str, Any]:
    """The params `forward_batch` reads: jobs whose (resolved) values agree can share one pass."""
    return params.model_dump(
        mode="json",
        include={"model", "task", "method", "lrp", "target", "cam_layer", "resize", "faithfulness", "precision"},
    )


def batch_key(resolved: ResolvedParams, shape: tuple[int, ...]) -> str | None:
    """Equal keys: jobs that can share one forward + LRP pass (same model, pass params and image
    (C, H, W)); None for jobs a batch would not speed up (region-normalized LRP, CAM baselines).
    The params are resolved, so the model id and class are explicit."""
    params = resolved.params
    if not (one_pass(params) or params.task.value == "segment"):
        return None
    text = json.dumps({"pass": batch_params(params), "shape": list(shape)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def finish(
    info: ModelInfo,
    image: DecodedImage,
    resolved: ResolvedParams,
    forwarded: Forwarded,
    ground_truth: np.ndarray | None = None,
    *,
    progress: Progress | None = None,
    series_base: int = SERIES_BASE,
    encoder: PngEncoder | None = None,
) -> PipelineResult:
    """One image's part after the (shared) pass: segmentation summary, masks, metrics, artifacts.
    `series_base`: the DICOM outputs' SeriesNumber base (lrpseg.io.dicom_labels).

    The masks, the transfer and the colour look-up run on the relevance's device; the PNGs are
    encoded by `encoder`'s threads (in this thread without one) while the rest of the job runs,
    and the result is returned only once every artifact is encoded (an encoding error fails it)."""
    params = check_resolved(resolved, info)
    device = forwarded.logits.device
    clock = Clock(device, progress)
    tail_start = time.perf_counter()
    warnings: list[str] = list(image.warnings)
    artifacts: dict[str, bytes] = {}
    result: dict[str, Any] = {
        "model": {"id": info.id, "name": info.name, "version": info.version, "kind": info.kind},
        "input": {
            "format": image.format,
            "bit_depth": image.bit_depth,
            "channels": image.channels,
            "height": image.height,
            "width": image.width,
            "dicom": image.dicom is not None,
            "frame": image.frame,
            "depth": image.depth,
            "modality": image.modality,
            "window": input_window(params),
        },
        "device": str(device),
    }
    mismatch = domain_mismatch(info, image)
    if mismatch is not None:  # only reached with params.allow_domain_mismatch (check_domain)
        warnings.append(f"outside the model's domain: {mismatch}; run because params.allow_domain_mismatch is true")
    x01, logits, explained = forwarded.x01, forwarded.logits, forwarded.explained
    h, w = x01.shape[-2:]
    if (h, w) != (image.height, image.width):
        result["input"]["resized_from"] = (image.height, image.width)
    truth = ground_truth
    if ground_truth is not None and not image.is_volume:
        truth = resize_truth(ground_truth, (h, w))
    labels, model_mask = summarise_output(result, info, logits, params)
    if model_mask is not None and not model_mask.any() and params.target.kind in ("class", "region"):
        warnings.append(empty_target_warning(info, params))

    extracted: dict[str, Any] = {}
    rel2d: np.ndarray | None = None  # (H, W), or (D, H, W) for a volume
    display: dict[str, float | None] | None = None
    pending = Pending(encoder)
    if explained is not None:
        summed = explained.summed()
        rel2d = summed.cpu().numpy()
        with clock.stage("render", report=False):
            display = display_scale(rel2d, params)
            if not image.is_volume:
                # The explanation's pictures first (render's early part): the pool encodes them while the masks run.
                picture_artifacts(pending, params, info, x01, labels, summed, display)
        with clock.stage("masks"):
            extracted = mask_extractors.extract_all([m.value for m in params.masks], summed)
        with clock.stage("metrics"):
            result["explanation"] = dict(explained.summary)
            result["explanation"]["metrics"] = quality_metrics(explained)
            result["explanation"]["display"] = display
            result["masks"] = mask_summaries(extracted, model_mask, truth)
            if truth is not None:
                result["ground_truth"] = truth_summary(truth, model_mask, rel2d)
    elif truth is not None:
        with clock.stage("metrics"):
            result["ground_truth"] = truth_summary(truth, model_mask, None)

    with clock.stage("render"):
        render_artifacts(
            pending,
            params,
            info,
            image,
            x01,
            labels,
            explained,
            rel2d,
            display,
            extracted,
            truth,
            warnings,
            series_base,
        )
        artifacts = pending.resolve()
    result["params"] = params.model_dump(mode="json")
    result["warnings"] = warnings
    shared_ms = sum(forwarded.ms.values())
    total = shared_ms + (time.perf_counter() - tail_start) * 1000
    result["timings"] = {**forwarded.ms, **clock.ms, "total": round(total, 3), "batch_size": forwarded.batch_size}
    result["artifacts"] = [
        {"name": n, "media_type": MEDIA_TYPES[n[n.rindex(".") :]], "bytes": len(b)}
        for n, b in sorted(artifacts.items())
    ]
    return PipelineResult(result, artifacts)


def run_job(
    model: nn.Module,
    info: ModelInfo,
    image: DecodedImage,
    params: JobParams,
    ground_truth: np.ndarray | None = None,
    *,
    progress: Progress | None = None,
    device: torch.device | str | None = None,
    encoder: PngEncoder | None = None,
) -> PipelineResult:
    """Run one job (the params resolved here, once, and the image read as params.input and the
    model's window say: lrpseg.inputs.apply_input). `ground_truth`: bool (H, W) of the target class, optional;
    `encoder`: a PNG pool (see finish)."""
    resolved = resolve_params(params, info)
    image = apply_input(image, resolved.params, info)
    (forwarded,) = forward_batch(model, info, [image], resolved, progress=progress, device=device)
    return finish(info, image, resolved, forwarded, ground_truth, progress=progress, encoder=encoder)


def run_prepared(
    model: nn.Module,
    inputs: JobInputs,
    *,
    progress: Progress | None = None,
    device: torch.device | str | None = None,
    series_base: int = SERIES_BASE,
    encoder: PngEncoder | None = None,
) -> PipelineResult:
    """Run one job on inputs `lrpseg.inputs.prepare_inputs` decoded and checked (params resolved there);
    `encoder`: the worker's PNG pool (see finish)."""
    (forwarded,) = forward_batch(model, inputs.info, [inputs.image], inputs.params, progress=progress, device=device)
    return finish(
        inputs.info,
        inputs.image,
        inputs.params,
        forwarded,
        inputs.truth,
        progress=progress,
        series_base=series_base,
        encoder=encoder,
    )


def run_jobs(
    model: nn.Module,
    info: ModelInfo,
    images: list[DecodedImage],
    params: list[JobParams],
    ground_truths: list[np.ndarray | None] | None = None,
    *,
    progress: Progress | None = None,
    device: torch.device | str | None = None,
    encoder: PngEncoder | None = None,
) -> list[PipelineResult]:
    """Run jobs of one image shape whose `batch_params` agree, with one shared forward + LRP pass.

    Each result equals `run_job` on its own image up to the last bits of float32 (batched
    convolutions may sum in another order); `timings.batch_size` says how many shared the pass.
    """
    if len(params) != len(images):
        raise ValueError(f"{len(images)} images but {len(params)} params")
    if not images:
        return []
    resolved = [resolve_params(p, info) for p in params]
    images = [apply_input(image, p.params, info) for image, p in zip(images, resolved)]
    if any(batch_params(p.params) != batch_params(resolved[0].params) for p in resolved):
        raise ValueError(
            "jobs in one batch must agree on model, task, method, lrp, target, cam_layer, resize, faithfulness and precision"
        )
    truths = ground_truths if ground_truths is not None else [None] * len(images)
    forwarded = forward_batch(model, info, images, resolved[0], progress=progress, device=device)
    return [
        finish(info, image, p, f, t, progress=progress, encoder=encoder)
        for image, p, f, t in zip(images, resolved, forwarded, truths)
    ]


def summarise_output(
    result: dict[str, Any], info: ModelInfo, logits: Tensor, params: JobParams
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Segmentation (class shares) or classification (probabilities); the model's target mask."""
    if logits.dim() == 2:
        probs = torch.softmax(logits[0].float(), 0).cpu().tolist()
        best = int(np.argmax(probs))
        result["classification"] = {
            "predicted": best,
            "predicted_name": info.class_names[best],
            "probabilities": {n: finite(p) for n, p in zip(info.class_names, probs)},
        }
        return None, None
    labels = logits[0].argmax(0).cpu().numpy()
    counts = np.bincount(labels.ravel(), minlength=info.num_classes)
    result["segmentation"] = {
        "depth": int(labels.shape[0]) if labels.ndim == 3 else None,
        "height": int(labels.shape[-2]),
        "width": int(labels.shape[-1]),
        "classes": [
            {"index": i, "name": n, "pixels": int(c), "share": float(c) / labels.size}
            for i, (n, c) in enumerate(zip(info.class_names, counts))
        ],
    }
    cls = params.target.cls
    model_mask = labels == cls if cls is not None else labels != 0
    return labels, model_mask


def empty_target_warning(info: ModelInfo, params: JobParams) -> str:
    """Never a silent all-background answer: say the model found nothing, and what to check."""
    cls = params.target.cls
    name = info.class_names[cls] if isinstance(cls, int) else str(cls)
    return (
        f"the model predicts no {name!r} pixels in this image: the explanation is of an empty output and "
        "the masks' metrics compare empty masks. If the part should show one, check how the image's values "
        "are read (params.input.bits or input.window)"
    )


def mask_summaries(
    extracted: dict[str, Any], model_mask: np.ndarray | None, truth: np.ndarray | None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, found in extracted.items():
        ap = None
        if truth is not None and found.score is not None and truth.any():
            ap = finite(metric_fns.pr_curve(found.score, truth).average_precision)
        out[name] = {
            "extractor": name,
            "pixels": int(np.count_nonzero(found.mask)),
            "share": float(found.mask.mean()),
            "vs_model": seg_metrics(found.mask, model_mask) if model_mask is not None else None,
            "vs_ground_truth": seg_metrics(found.mask, truth) if truth is not None else None,
            "average_precision": ap,
        }
    return out


def truth_summary(truth: np.ndarray, model_mask: np.ndarray | None, rel2d: np.ndarray | None) -> dict[str, Any]:
    rel_ap = None
    if rel2d is not None and truth.any():
        rel_ap = finite(metric_fns.pr_curve(rel2d, truth).average_precision)
    return {
        "positive_pixels": int(truth.sum()),
        "no_skill": float(truth.mean()),
        "model": seg_metrics(model_mask, truth) if model_mask is not None else None,
        "relevance_average_precision": rel_ap,
    }


def picture_artifacts(
    pending: Pending,
    params: JobParams,
    info: ModelInfo,
    x01: Tensor,
    labels: np.ndarray | None,
    summed: Tensor,
    display: dict[str, float | None],
) -> None:
    """An image's pictures of the explanation (drawn on summed's device, handed to the PNG pool), scaled
    as display_scale says."""
    wants = params.wants
    if labels is not None and wants("segmentation.png"):
        pending.png("segmentation.png", render.segmentation_rgb(labels, info.num_classes, x01[0].cpu().numpy()))
    if not (wants("relevance.png") or wants("overlay.png")):
        return
    heat = render.heatmap(summed, **picture_transfer(params, display))  # one transfer for both pictures
    if wants("relevance.png"):
        pending.png("relevance.png", render.relevance_rgb(heat))
    if wants("overlay.png"):
        pending.png("overlay.png", render.overlay_rgb(x01[0], heat))


def render_artifacts(
    pending: Pending,
    params: JobParams,
    info: ModelInfo,
    image: DecodedImage,
    x01: Tensor,
    labels: np.ndarray | None,
    explained: Explained | None,
    rel2d: np.ndarray | None,
    display: dict[str, float | None] | None,
    extracted: dict[str, Any],
    truth: np.ndarray | None,
    warnings: list[str],
    series_base: int = SERIES_BASE,
) -> None:
    """Every artifact picture_artifacts did not draw (the masks', the PR curves, DICOM, .npy), into `pending`;
    display: display_scale of rel2d (None without an explanation)."""
    wants = params.wants
    pixels = x01[0].cpu().numpy()
    if image.is_volume:
        volume_artifacts(pending, params, info, pixels, labels, explained, rel2d, display, extracted, truth)
        rel3d = rel2d  # a volume's (D, H, W) relevance
        series = series_dicom_artifacts(params, info, image, labels, rel3d, extracted, warnings, series_base)
        for name, data in series.items():
            pending[name] = data
        return
    if labels is not None and wants("segmentation.png") and explained is None:
        pending.png("segmentation.png", render.segmentation_rgb(labels, info.num_classes, pixels))
    if labels is not None and wants("segmentation.npy"):  # class indices, for programs (client, /v2 infer)
        pending["segmentation.npy"] = npy_bytes(labels.astype(np.uint8 if info.num_classes <= 256 else np.int32))
    if explained is not None and rel2d is not None and display is not None:
        if wants("colorbar.png"):
            scale = display
            pending.later("colorbar.png", lambda: colorbar_artifact(scale, params))  # text drawing: ~1.5 ms
        if wants("relevance.npy"):
            pending["relevance.npy"] = npy_bytes(explained.relevance.astype(np.float32))
        for name, found in extracted.items():
            if wants(f"mask-{name}.png"):
                pending.png(f"mask-{name}.png", render.mask_pixels(found.mask))
        if truth is not None and truth.any() and wants("pr-curve.png"):
            curves = {"relevance": metric_fns.pr_curve(rel2d, truth)}
            curves.update({n: metric_fns.pr_curve(f.score, truth) for n, f in extracted.items() if f.score is not None})
            pending["pr-curve.png"] = render.pr_curve_png(curves, float(truth.mean()))
    for name, data in dicom_artifacts(params, info, image, labels, rel2d, extracted, warnings, series_base).items():
        pending[name] = data


def volume_artifacts(
    pending: Pending,
    params: JobParams,
    info: ModelInfo,
    pixels: np.ndarray,
    labels: np.ndarray | None,
    explained: Explained | None,
    rel3d: np.ndarray | None,
    display: dict[str, float | None] | None,
    extracted: dict[str, Any],
    truth: np.ndarray | None,
) -> None:
    """A volume's pictures: the 2-D artifacts drawn on a mosaic of evenly spaced axial slices
    (`montage_slices`, row by row), one colour scale and a threshold `tau` from the whole volume;
    relevance.npy holds the full (C, D, H, W) relevance. DICOM: `series_dicom_artifacts`."""
    wants = params.wants
    slices = montage_slices(pixels.shape[1])
    if labels is not None and wants("segmentation.png"):
        pending.png("segmentation.png", render.segmentation_rgb(tile(labels, slices), info.num_classes))
    if labels is not None and wants("segmentation.npy"):
        pending["segmentation.npy"] = npy_bytes(labels.astype(np.uint8 if info.num_classes <= 256 else np.int32))
    if explained is None or rel3d is None or display is None:
        return
    # the log transfer's threshold from the whole volume; one transfer for both pictures
    heat = render.heatmap(tile(rel3d, slices), **picture_transfer(params, display))
    if wants("relevance.png"):
        pending.png("relevance.png", render.relevance_rgb(heat))
    if wants("overlay.png"):
        pending.png("overlay.png", render.overlay_rgb(tile(pixels, slices), heat))
    if wants("colorbar.png"):
        scale = display
        pending.later("colorbar.png", lambda: colorbar_artifact(scale, params))
    if wants("relevance.npy"):
        pending["relevance.npy"] = npy_bytes(explained.relevance.astype(np.float32))
    for name, found in extracted.items():
        if wants(f"mask-{name}.png"):
            pending.png(f"mask-{name}.png", render.mask_pixels(tile(found.mask, slices)))
    if truth is not None and truth.any() and wants("pr-curve.png"):
        curves = {"relevance": metric_fns.pr_curve(rel3d, truth)}
        curves.update({n: metric_fns.pr_curve(f.score, truth) for n, f in extracted.items() if f.score is not None})
        pending["pr-curve.png"] = render.pr_curve_png(curves, float(truth.mean()))


MASK_FAMILY = {  # PS3.16 CID 7162 family of each mask extractor (lrpseg.masks)
    "simple": "HistogramAnalysis",  # iterative mean threshold
    "gmm": "ClusterAnalysis",  # mixture-model posterior
    "bmm": "ClusterAnalysis",
    "component": "NeighborhoodAnalysis",  # each connected region cut at a share of its peak
}


def method_text(params: JobParams) -> str:
    """What produced the outputs, for SeriesDescription: "LRP conserving", "Seg-Grad-CAM", "segmentation"."""
    if params.task.value == "segment":
        return "segmentation"
    if params.method.value == "lrp":
        return f"LRP {params.lrp.composite.value}"
    return {"seg-grad-cam": "Seg-Grad-CAM", "seg-hires-grad-cam": "Seg-HiRes-Grad-CAM"}[params.method.value]


def output_labels(params: JobParams, info: ModelInfo, warnings: list[str], series_base: int) -> OutputLabels:
    """How this job's DICOM outputs are labelled (lrpseg.io.dicom_labels); warnings go into ImageComments."""
    return OutputLabels(
        info.name,
        info.version,
        method_text(params),
        research_use_only=info.metadata.research_use_only,
        series_base=series_base,
        notes=tuple(warnings),
    )


@dataclass(frozen=True)
class Segments:
    """DICOM SEG segments by label, with their codes and algorithm identification."""

    masks: dict[str, np.ndarray]
    codes: dict[str, Any]
    algorithms: dict[str, tuple[str, str, str]]


def segments_and_codes(
    params: JobParams, info: ModelInfo, labels: np.ndarray | None, extracted: dict[str, Any]
) -> Segments:
    """DICOM SEG segments: each model class but background, coded as the model declares, and
    each LRP mask, coded as an explanation region (lrpseg.io.dicom_labels.EXPLANATION_CATEGORY)
    of the explained class's type, its algorithm named after the method and the mask extractor."""
    coded = info.metadata.coding
    segments: dict[str, np.ndarray] = {}
    codes: dict[str, Any] = {}
    algorithms: dict[str, tuple[str, str, str]] = {}
    if labels is not None:
        for i, n in enumerate(info.class_names[1:], start=1):
            segments[f"{n} ({info.name})"] = labels == i
            codes[f"{n} ({info.name})"] = segment_triplets(coded(n))
    # An LRP mask estimates where the explained class is: its type is that class's (a classifier
    # explaining its predicted class: the one class with declared codes, if one).
    cls, declared = params.target.cls, info.metadata.segment_codes
    explained_class = (
        info.class_names[int(cls)] if cls is not None else next(iter(declared)) if len(declared) == 1 else None
    )
    kind = segment_triplets(coded(explained_class))[1] if explained_class is not None else RELEVANT_REGION
    method = method_text(params)
    for n, f in extracted.items():
        label = f"LRP mask ({n})"
        segments[label] = f.mask
        codes[label] = (EXPLANATION_CATEGORY, kind)
        algorithms[label] = (f"{method} + {n} mask"[:64], lrpseg_version, MASK_FAMILY.get(n, "HistogramAnalysis"))
    return Segments(segments, codes, algorithms)


def series_dicom_artifacts(
    params: JobParams,
    info: ModelInfo,
    image: DecodedImage,
    labels: np.ndarray | None,
    rel3d: np.ndarray | None,
    extracted: dict[str, Any],
    warnings: list[str],
    series_base: int,
) -> dict[str, bytes]:
    """One DICOM SEG of a volume decoded from a DICOM series (a frame per slice and segment, each
    referencing its instance) and the relevance as one Parametric Map over the same instances."""
    if image.series is None:
        return {}
    from lrpseg.io import DicomExportError
    from lrpseg.io.dicom_out import series_relevance_to_dicom, series_segmentation_to_dicom_seg

    out: dict[str, bytes] = {}
    found = segments_and_codes(params, info, labels, extracted)
    tags = output_labels(params, info, warnings, series_base)
    model = {"model_id": info.name, "model_version": info.version, "labels": tags}
    try:
        if found.masks and params.wants("seg.dcm"):
            out["seg.dcm"] = bytes(
                series_segmentation_to_dicom_seg(
                    image.series,
                    found.masks,
                    segment_codes=found.codes,
                    segment_algorithms=found.algorithms,
                    **model,  # type: ignore[arg-type]
                )
            )
        fits = rel3d is not None and rel3d.shape == (len(image.series), image.height, image.width)
        if fits and params.wants("relevance.dcm"):
            out["relevance.dcm"] = bytes(series_relevance_to_dicom(image.series, rel3d, **model))  # type: ignore[arg-type]
    except DicomExportError as exc:
        warnings.append(f"no DICOM output: {exc}")
    return out


def colorbar_artifact(scale: dict[str, float | None], params: JobParams) -> bytes:
    """The colour bar labelled with a map's display_scale (the bare strip for an all-zero map)."""
    if scale["max_abs"] is None:
        return render.colorbar_png()
    mass = params.visualisation.threshold if params.visualisation.threshold_mode == "mass" else None
    mode = params.visualisation.transfer
    return render.colorbar_png(scale["max_abs"], tau=scale["tau"], mode=mode, mass=mass)


def dicom_artifacts(
    params: JobParams,
    info: ModelInfo,
    image: DecodedImage,
    labels: np.ndarray | None,
    rel2d: np.ndarray | None,
    extracted: dict[str, Any],
    warnings: list[str],
    series_base: int,
) -> dict[str, bytes]:
    """DICOM SEG (model classes + relevance masks) and the relevance map, for DICOM inputs.

    A source highdicom cannot reference is a warning in the result, not a failed job.
    """
    if image.dicom is None or (labels is not None and labels.shape != (image.height, image.width)):
        return {}
    from lrpseg.io import DicomExportError
    from lrpseg.io.dicom_out import relevance_to_dicom, segmentation_to_dicom_seg

    out: dict[str, bytes] = {}
    found = segments_and_codes(params, info, labels, extracted)
    tags = output_labels(params, info, warnings, series_base)
    model = {"model_id": info.name, "model_version": info.version, "labels": tags}
    try:
        if found.masks and params.wants("seg.dcm"):
            out["seg.dcm"] = bytes(
                segmentation_to_dicom_seg(
                    image.dicom,
                    found.masks,
                    segment_codes=found.codes,
                    segment_algorithms=found.algorithms,
                    **model,  # type: ignore[arg-type]
                )
            )
        if rel2d is not None and rel2d.shape == (image.height, image.width) and params.wants("relevance.dcm"):
            rel = relevance_to_dicom(image.dicom, rel2d.astype(np.float32), **model)  # type: ignore[arg-type]
            out["relevance.dcm"] = bytes(rel)
    except DicomExportError as exc:
        warnings.append(f"no DICOM output: {exc}")
    return out


def segment_triplets(coding: Any) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
    """A registry SegmentCoding as lrpseg.io.dicom_out's (category, type) code triplets."""
    return (
        (coding.category.scheme, coding.category.value, coding.category.meaning),
        (coding.type.scheme, coding.type.value, coding.type.meaning),
    )
