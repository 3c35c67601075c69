"""The result of a finished job: what the worker computed, as JSON (no NaN, no pixels)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from schemas.params import JobParams


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelRef(Out):
    id: str = Field(description="name@version")
    name: str
    version: str
    kind: str


class InputSummary(Out):
    format: str
    bit_depth: int
    channels: int
    height: int
    width: int
    dicom: bool
    frame: int | None = None
    depth: int | None = Field(None, description="slices of a volume (NIfTI, DICOM series, 3-D .npy); None for 2-D")
    modality: str | None = Field(None, description="DICOM Modality of a DICOM input")
    window: dict[str, float] | None = Field(None, description="the model's input window (center, width) applied")
    resized_from: tuple[int, int] | None = Field(None, description="original (height, width) when resized")


class ClassShare(Out):
    index: int
    name: str
    pixels: int
    share: float


class SegmentationSummary(Out):
    depth: int | None = None
    height: int
    width: int
    classes: list[ClassShare]


class ClassificationSummary(Out):
    predicted: int
    predicted_name: str
    probabilities: dict[str, float]


class SegMetrics(Out):
    iou: float | None
    precision: float | None
    recall: float | None
    dice: float | None
    f1: float | None
    pixel_accuracy: float | None
    positive_share: float | None


class Curves(Out):
    deletion: list[float] = Field(description="score / unperturbed score after deleting the top fractions")
    insertion: list[float] = Field(description="score / unperturbed score with only the top fractions inserted")
    deletion_auc: float = Field(description="smaller = more faithful")
    insertion_auc: float = Field(description="larger = more faithful")
    difference: float = Field(description="insertion_auc - deletion_auc; larger = more faithful, ~0 for random")


class Faithfulness(Out):
    """Pixel deletion / insertion of the explained output (lrpseg.metrics.faithfulness)."""

    steps: int
    baseline: str
    fractions: list[float]
    explanation: Curves
    random: Curves
    gradient: Curves


class ExplanationSummary(Out):
    method: str
    composite: str | None = None
    rule_overrides: list[str] | None = Field(None, description="layers whose rule the request overrode")
    target: str
    cls: int | None
    cls_name: str | None
    explained_pixels: int | None = Field(None, description="pixels whose output was explained")
    relevance_sum: float
    r_out_sum: float | None = None
    conservation: float | None = Field(None, description="Σ input relevance / Σ r_out")
    bias_share: float | None = Field(None, description="relevance absorbed by biases / Σ r_out")
    stabilizer_share: float | None = Field(
        None,
        description="relevance absorbed by the rules' stabilisers (ε) / Σ r_out; with conservation and "
        "bias_share it adds up to 1 (class, region and all targets)",
    )
    channel_shares: list[float] | None = None
    metrics: dict[str, float | None] = Field(
        default_factory=dict, description="relevance_mass_accuracy, pointing_game, negative_share"
    )
    faithfulness: Faithfulness | None = Field(None, description="only when params.faithfulness is true")
    display: dict[str, float | None] = Field(
        default_factory=dict, description="max_abs and tau (relevance units) behind relevance.png and colorbar.png"
    )


class MaskSummary(Out):
    extractor: str
    pixels: int
    share: float
    vs_model: SegMetrics | None = Field(None, description="against the model's segmentation of the target class")
    vs_ground_truth: SegMetrics | None = None
    average_precision: float | None = Field(None, description="area under the PR curve of the score vs ground truth")


class GroundTruthMetrics(Out):
    positive_pixels: int
    no_skill: float = Field(description="precision of a no-skill classifier: the positive share")
    model: SegMetrics | None = Field(None, description="the model's segmentation of the target class vs ground truth")
    relevance_average_precision: float | None = Field(None, description="PR AUC of raw relevance vs ground truth")


class Timings(Out):
    """Milliseconds per stage; stages not run are absent."""

    decode: float | None = None
    forward: float | None = None
    lrp: float | None = None
    faithfulness: float | None = None
    masks: float | None = None
    metrics: float | None = None
    render: float | None = None
    total: float
    batch_size: int = Field(
        1, ge=1, description="jobs that shared this job's forward and LRP pass (forward and lrp are that pass's times)"
    )


class ArtifactInfo(Out):
    name: str
    media_type: str
    bytes: int
    url: str | None = None


class JobResult(Out):
    model: ModelRef
    params: JobParams = Field(description="the parameters used, defaults filled in")
    input: InputSummary
    segmentation: SegmentationSummary | None = None
    classification: ClassificationSummary | None = None
    explanation: ExplanationSummary | None = None
    masks: dict[str, MaskSummary] = Field(default_factory=dict)
    ground_truth: GroundTruthMetrics | None = None
    timings: Timings
    device: str | None = Field(None, description="where it ran: cpu, cuda:0, ...")
    artifacts: list[ArtifactInfo] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list, description="what could not be produced, and why")
