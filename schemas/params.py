"""Job request parameters: the `params` JSON part of a job submission.

Every model forbids unknown fields, so a typo ("mask" for "masks") is a 422 naming
the field instead of being silently ignored. Every number, list, dict and string is bounded
and NaN/infinity are refused (docs/security.md): absurd values are a 422 here, never work
for a worker.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

MAX_NAME = 200  # module names, model references, class names
MAX_RULES = 256  # per-layer overrides (the shipped U-Net has ~40 layers)
MAX_COORD = 1 << 20  # box coordinates; images are far smaller (max_side)
MAX_CLASS = 4096
MAX_FRAME = 1 << 16
MAX_FACTOR = 1e6  # ε, γ, α, β, z-box bounds

Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Task(StrEnum):
    segment = "segment"  # forward pass and segmentation only
    explain = "explain"  # segmentation + explanation + masks + metrics


class Method(StrEnum):
    lrp = "lrp"
    seg_grad_cam = "seg-grad-cam"
    seg_hires_grad_cam = "seg-hires-grad-cam"


class Composite(StrEnum):
    """The names of lrpseg.rule_specs.SERVED_COMPOSITES (tests/lrpseg/test_rule_specs.py)."""

    conserving_reference = "conserving-reference"
    conserving = "conserving"
    conserving_local = "conserving-local"
    ours = "ours"
    montavon = "montavon"
    epsilon_gamma_box = "epsilon-gamma-box"
    epsilon_gamma_reference = "epsilon-gamma-reference"
    epsilon_plus_flat = "epsilon-plus-flat"


class Precision(StrEnum):
    fp32 = "fp32"  # the default
    bf16 = "bf16"  # the forward pass in bfloat16 on a CUDA worker, the sweep in float32 (lrpseg.precision)
    fp16 = "fp16"


class Extractor(StrEnum):
    simple = "simple"  # simple, gmm, bmm: seed 001's procedures, exactly
    gmm = "gmm"
    bmm = "bmm"
    component = "component"  # each relevant region cut at a share of its own peak (lrpseg.masks.components)


class Artifact(StrEnum):
    segmentation = "segmentation.png"
    relevance = "relevance.png"
    overlay = "overlay.png"
    colorbar = "colorbar.png"
    mask_simple = "mask-simple.png"
    mask_gmm = "mask-gmm.png"
    mask_bmm = "mask-bmm.png"
    mask_component = "mask-component.png"
    pr_curve = "pr-curve.png"
    relevance_npy = "relevance.npy"
    segmentation_npy = "segmentation.npy"
    seg_dcm = "seg.dcm"
    relevance_dcm = "relevance.dcm"


# ---- LRP rules (the names: lrpseg.rule_specs.RULES, tests/lrpseg/test_rule_specs.py) -------------


class EpsilonRule(Strict):
    rule: Literal["epsilon"]
    epsilon: float = Field(0.25, gt=0, le=MAX_FACTOR, description="stabiliser ε")
    relative: bool = Field(True, description="ε × RMS of the layer's pre-activations (seed 001)")


class GammaRule(Strict):
    rule: Literal["gamma"]
    gamma: float = Field(0.25, ge=0, le=MAX_FACTOR)


class AlphaBetaRule(Strict):
    rule: Literal["alpha-beta"]
    alpha: float = Field(2.0, ge=1, le=MAX_FACTOR)
    beta: float = Field(1.0, ge=0, le=MAX_FACTOR)

    @model_validator(mode="after")
    def _conservative(self) -> AlphaBetaRule:
        if abs(self.alpha - self.beta - 1.0) > 1e-9:
            raise ValueError("alpha - beta must equal 1")
        return self


class ZBoxRule(Strict):
    rule: Literal["z-box"]
    low: float | None = Field(
        None, ge=-MAX_FACTOR, le=MAX_FACTOR, description="lower input bound; default: the model's z^B bounds"
    )
    high: float | None = Field(None, ge=-MAX_FACTOR, le=MAX_FACTOR)

    @model_validator(mode="after")
    def _ordered(self) -> ZBoxRule:
        if (self.low is None) != (self.high is None):
            raise ValueError("give both low and high, or neither")
        if self.low is not None and self.high is not None and not self.low < self.high:
            raise ValueError("low must be smaller than high")
        return self


class PlainRule(Strict):
    rule: Literal["z-plus", "flat", "w-square", "zero", "norm", "pass"]


RuleSpec = Annotated[EpsilonRule | GammaRule | AlphaBetaRule | ZBoxRule | PlainRule, Field(discriminator="rule")]


class LrpParams(Strict):
    composite: Composite = Field(
        Composite.conserving_reference,
        description="conserving-reference (default): bias-free z+ / alpha-beta(2, 1) like conserving-local, first layer "
        "z^B about each pixel's local median; relevance reaches the pixels and stays inside the object. "
        "conserving: z^B first layer, bias-free z+ elsewhere. "
        "conserving-local: bias-free everywhere (z+ first layer, alpha-beta(2, 1) shallow encoder). "
        "epsilon-gamma-reference: the map to extract masks from (does not conserve). "
        "ours/montavon: seed 001's composites (the reproduction). docs/lrp.md says which to use for what",
    )
    rules: dict[Name, RuleSpec] | None = Field(
        None,
        max_length=MAX_RULES,
        description="per-layer overrides: module name (as in model.named_modules()) -> rule; "
        "layers not named keep the composite's rule",
        examples=[{"encoders.0.0": {"rule": "z-box"}, "head": {"rule": "epsilon", "epsilon": 0.1}}],
    )


# ---- targets, masks, visualisation -------------------------------------------------


class Box(Strict):
    """A pixel rectangle [x0, x1) × [y0, y1) in input coordinates."""

    x0: int = Field(ge=0, le=MAX_COORD)
    y0: int = Field(ge=0, le=MAX_COORD)
    x1: int = Field(gt=0, le=MAX_COORD)
    y1: int = Field(gt=0, le=MAX_COORD)

    @model_validator(mode="after")
    def _ordered(self) -> Box:
        if self.x1 <= self.x0 or self.y1 <= self.y0:
            raise ValueError("need x0 < x1 and y0 < y1")
        return self


class Target(Strict):
    kind: Literal["class", "region", "region-normalized", "all"] = Field(
        "class",
        description="class: the pixels predicted as `cls`; region / region-normalized: `cls` inside `region` "
        "(seed 003's A and its per-location normalised variant); all: every class's prediction",
    )
    cls: Annotated[int, Field(le=MAX_CLASS)] | Name | None = Field(
        None, description="class index or name; default: the first non-background class (classifiers: predicted)"
    )
    region: list[Box] | None = Field(None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _region_given(self) -> Target:
        needs_region = self.kind in ("region", "region-normalized")
        if needs_region and not self.region:
            raise ValueError(f"target kind {self.kind!r} needs a region")
        if not needs_region and self.region:
            raise ValueError(f"target kind {self.kind!r} takes no region")
        if isinstance(self.cls, int) and self.cls < 0:
            raise ValueError("cls must be >= 0")
        return self


THRESHOLD_DEFAULTS = {"mass": 0.9, "percentile": 50.0, "fraction": 0.05}


class Visualisation(Strict):
    threshold: float = Field(
        0.9,
        ge=0,
        le=100,
        description="τ below which |R| is zeroed. mass (default 0.9): colour the fewest pixels that hold this "
        "share of Σ|R|; percentile (0-100) of the non-zero |R| (seed 000); fraction of max |R|. "
        "When left out: 0.9, 50 or 0.05 for the chosen mode; given without threshold_mode: a percentile "
        "(as before mass became the default)",
    )
    threshold_mode: Literal["mass", "percentile", "fraction"] = "mass"
    transfer: Literal["log", "linear"] = "log"

    @model_validator(mode="before")
    @classmethod
    def _default_for_mode(cls, data: object) -> object:
        """Fill what was left out. No threshold: the mode's default (50 for percentile, not 0.9).
        A threshold without a mode keeps its meaning from before mass became the default: a percentile."""
        if not isinstance(data, dict):
            return data
        if "threshold" not in data:
            mode = data.get("threshold_mode", "mass")
            if mode in THRESHOLD_DEFAULTS:
                return {**data, "threshold": THRESHOLD_DEFAULTS[mode]}
        elif "threshold_mode" not in data:
            return {**data, "threshold_mode": "percentile"}
        return data

    @model_validator(mode="after")
    def _range(self) -> Visualisation:
        limit = 100.0 if self.threshold_mode == "percentile" else 1.0
        if self.threshold > limit:
            raise ValueError(f"a {self.threshold_mode} threshold must be <= {limit:g}")
        return self


class Window(Strict):
    """A band of source values mapped onto [0, 1] (DICOM's window centre/width; for DICOM in
    modality units such as HU)."""

    centre: float = Field(ge=-1e12, le=1e12)
    width: float = Field(gt=0, le=1e12)


class InputParams(Strict):
    """How to read the image's values. Unset fields take the model's defaults (its config.json
    "input"), else: scale by the container's range, refuse RGB for a one-channel model."""

    bits: int | None = Field(
        None, ge=1, le=32, description="integer samples hold this many bits (12: 0..4095), whatever their container"
    )
    window: Window | None = Field(None, description="instead of bits: map centre ± width/2 onto [0, 1]")
    channels: Literal["reject", "luminance", "first"] | None = Field(
        None,
        description="RGB for a one-channel model: reject (422, the default), luminance (Rec. 709) or first channel",
    )

    @model_validator(mode="after")
    def _one_scale(self) -> InputParams:
        if self.bits is not None and self.window is not None:
            raise ValueError("give bits or window, not both")
        return self


UID = Annotated[str, StringConstraints(pattern=r"^[0-9]+(\.[0-9]+)*$", max_length=64)]
Url = Annotated[str, StringConstraints(min_length=1, max_length=2048)]


class DicomwebSource(Strict):
    """One series on a DICOMweb server, fetched by WADO-RS in the worker (pull mode)."""

    url: Url = Field(description="DICOMweb root URL, e.g. http://pacs:8042/dicom-web (host allow-listed)")
    study: UID = Field(description="StudyInstanceUID")
    series: UID = Field(description="SeriesInstanceUID")


class Source(Strict):
    """Where the image comes from when no image part is sent."""

    dicomweb: DicomwebSource


class SendParams(Strict):
    """Where this job's DICOM results (SEG + relevance map) go when it ends (docs/pacs.md)."""

    dicomweb: Url | Literal[False] | None = Field(
        None,
        description="a DICOMweb root URL to STOW-RS to (host in LRPSEG_DICOMWEB_ALLOWED_HOSTS), or false for none; "
        "default: LRPSEG_DICOMWEB_DESTINATION if set",
    )
    dimse: bool | None = Field(
        None, description="C-STORE to LRPSEG_DIMSE_DESTINATION: true, false; default: when it is configured"
    )


class JobParams(Strict):
    """What to compute. All fields are optional; `{}` explains the default model's defect class."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {},
                {"model": "unet-defects@1", "target": {"kind": "class", "cls": "defect"}, "masks": ["gmm"]},
                {
                    "task": "explain",
                    "method": "lrp",
                    "lrp": {"composite": "montavon"},
                    "target": {"kind": "region", "cls": 1, "region": [{"x0": 10, "y0": 10, "x1": 40, "y1": 40}]},
                    "visualisation": {"threshold": 0.05, "threshold_mode": "fraction"},
                    "artifacts": ["relevance.png", "relevance.npy"],
                },
            ]
        },
    )

    model: Name | None = Field(None, description="model reference name@version (or name); default: registry default")
    task: Task = Task.explain
    method: Method = Method.lrp
    lrp: LrpParams = LrpParams()
    cam_layer: Name | None = Field(None, description="module name for the CAM methods; default: the engine's choice")
    target: Target = Target()
    masks: list[Extractor] = Field(default_factory=lambda: list(Extractor), max_length=len(Extractor))
    visualisation: Visualisation = Visualisation()
    artifacts: list[Artifact] | None = Field(
        None, max_length=len(Artifact), description="which artifacts to produce; default: all that apply"
    )
    resize: bool = Field(False, description="resize to a classifier's fixed input size instead of rejecting")
    frame: int | None = Field(None, ge=0, le=MAX_FRAME, description="frame of a multi-frame DICOM")
    allow_domain_mismatch: bool = Field(
        False,
        description="run a DICOM input whose Modality lies outside the model's declared domain (else 422); "
        "the result then carries a warning",
    )
    faithfulness: bool = Field(
        False,
        description="also measure pixel deletion/insertion curves of the explanation, a random order and the plain "
        "gradient (2 x 21 forward passes each; docs/lrp.md)",
    )
    input: InputParams = Field(InputParams(), description="bit depth, window and colour handling of the image")
    source: Source | None = Field(
        None, description="instead of an image part: a series fetched from a PACS by WADO-RS (pull mode)"
    )
    send: SendParams = Field(SendParams(), description="where the DICOM results are sent when the job ends")
    precision: Precision = Field(
        Precision.fp32,
        description="number format of the model's forward pass (autocast): bf16/fp16 need a CUDA worker (422 when "
        "the workers run on the CPU); the LRP sweep, masks, metrics and pictures stay float32/float64. README "
        "gives the error against fp32",
    )

    @model_validator(mode="after")
    def _consistent(self) -> JobParams:
        if len(set(self.masks)) != len(self.masks):
            raise ValueError("masks lists an extractor twice")
        if self.artifacts is not None:
            if len(set(self.artifacts)) != len(self.artifacts):
                raise ValueError("artifacts lists a name twice")
            for name in self.artifacts:
                extractor = name.value.removeprefix("mask-").removesuffix(".png")
                if name.value.startswith("mask-") and extractor not in self.masks:
                    raise ValueError(f"artifact {name.value} needs {extractor!r} in masks")
        if self.method is not Method.lrp and self.lrp != LrpParams():
            raise ValueError(f"lrp settings do not apply to method {self.method.value!r}")
        if self.faithfulness and self.task is not Task.explain:
            raise ValueError("faithfulness needs task 'explain'")
        if self.method is Method.lrp and self.cam_layer is not None:
            raise ValueError("cam_layer applies only to the CAM methods")
        return self

    def wants(self, artifact: Artifact | str) -> bool:
        """Whether this artifact was asked for (all are, when `artifacts` is not given)."""
        return self.artifacts is None or Artifact(artifact) in self.artifacts
