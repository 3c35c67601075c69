"""The three shipped models: architecture, data and training settings.

Every shipped model takes one grey channel normalised with mean 0.5 and std 0.25,
so pixels in [0, 1] map to [-2, 2]: the z^B bounds of the first layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NORM_MEAN = 0.5
NORM_STD = 0.25


@dataclass(frozen=True)
class Preset:
    key: str
    name: str
    kind: str
    architecture: dict[str, Any]
    class_names: list[str]
    size: int
    epochs: int
    n_train: int
    batch_size: int
    lr: float
    description: str
    intended_use: str
    limits: list[str] = field(default_factory=list)
    crop: int | None = None  # train on random crops of this side (the U-Net is fully convolutional)


COMMON_LIMITS = [
    "Trained only on procedurally generated grey surfaces (lrpseg.data); real inspection images differ "
    "in texture, optics and defect types. Retrain or fine-tune on your own data before relying on it.",
    "Not a medical device and not validated for any safety-relevant decision.",
]

VGG_ERRS = (
    "Deposits (clusters of small spots) are the main source of false alarms and blowholes the more often "
    "missed defect: see 'Where it errs'."
)

VGG_LIMITS = [
    "Fixed 64x64 input: larger images must be resized, which blurs thin cracks.",
    "Deposits (clusters of small spots) are the main source of false alarms and blowholes the more often "
    "missed defect: see 'Where it errs'.",
]

# Every shipped model sees grey surface photographs. As DICOM such pictures are "OT" (other) or "XC"
# (external-camera photography); a CT, MR, X-ray ... is outside the domain (lrpseg.inputs.check_domain).
SURFACE_DOMAIN = {
    "modalities": ["OT", "XC"],
    "description": "grey photographs of machined or cast metal surfaces (procedurally generated in training)",
}
# DICOM SEG needs a Segmented Property Category and Type. SNOMED CT and DCM code anatomy and pathology,
# not flaws in materials: category SCT 260787004 "Physical object" is the honest parent, and the type is
# a private code (scheme "99LRPSEG"; PS3.3 8.2: private schemes start with "99") instead of borrowing
# "Lesion" for a crack in a casting. docs/models.md says why.
SURFACE_DEFECT_CODES = {
    "category": {"scheme": "SCT", "value": "260787004", "meaning": "Physical object"},
    "type": {"scheme": "99LRPSEG", "value": "SURFDEF", "meaning": "Surface defect"},
}

PRESETS: dict[str, Preset] = {
    "unet": Preset(
        key="unet",
        name="unet-defects",
        kind="segmenter",
        architecture={
            "family": "unet",
            "in_channels": 1,
            "num_classes": 2,
            "depth": 4,
            "base_width": 8,
            "batch_norm": True,
            "upsampling": "transpose",
        },  # fmt: skip
        class_names=["background", "defect"],
        size=128,
        crop=64,
        epochs=20,
        n_train=1200,
        batch_size=32,
        lr=2e-3,
        description="U-Net (depth 4, width 8, BatchNorm, transposed-conv upsampling) segmenting cracks and "
        "blowholes on grey surfaces; trained with pixel masks.",
        intended_use="Default model of the lrpseg service: demonstrates segmentation and whole-output LRP "
        "explanations; baseline for LRP-derived masks (seed 001).",
        limits=COMMON_LIMITS
        + [
            "Distractors (stains, deposits, bright scratches, brightness edges) cause most false alarms on "
            "defect-free images, and blowholes are segmented less completely than cracks (their borders are "
            "missed): see 'Where it errs'."
        ],
    ),
    "vgg11-128n": Preset(
        key="vgg11-128n",
        name="vgg11-128n-defects",
        kind="classifier",
        architecture={
            "family": "vgg11",
            "in_channels": 1,
            "num_classes": 2,
            "base_width": 8,
            "input_size": 64,
            "head": "128n",
            "hidden": 128,
        },  # fmt: skip
        class_names=["defect-free", "defect"],
        size=64,
        epochs=20,
        n_train=3000,
        batch_size=32,
        lr=1e-3,
        description="VGG-11 without BatchNorm, two fully connected layers of 128 neurons (seed 001 'VGG-A 128N'); "
        "trained on image-level labels only.",
        intended_use="Image-level defect detection and weakly supervised segmentation by LRP + Simple/GMM/BMM "
        "masks (seed 001).",
        limits=COMMON_LIMITS + VGG_LIMITS,
    ),
    "vgg11-onefc": Preset(
        key="vgg11-onefc",
        name="vgg11-onefc-defects",
        kind="classifier",
        architecture={
            "family": "vgg11",
            "in_channels": 1,
            "num_classes": 2,
            "base_width": 8,
            "input_size": 64,
            "head": "one-fc",
            "hidden": 128,
        },  # fmt: skip
        class_names=["defect-free", "defect"],
        size=64,
        epochs=20,
        n_train=3000,
        batch_size=32,
        lr=1e-3,
        description="VGG-11 without BatchNorm, last max-pool connected directly to the two outputs "
        "(seed 001 'VGG-A one FC'); trained on image-level labels only.",
        intended_use="Image-level defect detection and weakly supervised segmentation by LRP + Simple/GMM/BMM "
        "masks (seed 001).",
        limits=COMMON_LIMITS + VGG_LIMITS,
    ),
}

# Paper-like input size (seed 001 trains at 224 px) for weakly supervised masks: the classifier sees
# thin cracks that 64 px blurs away. Fewer images and epochs than the 64 px presets so that both heads
# train in about a quarter of an hour each on one CPU thread (see docs/reproduce-seed001.md).
VGG_192_LIMITS = [
    "Fixed 192x192 input: other sizes are resized.",
    VGG_ERRS,
]
for _key in ("vgg11-128n", "vgg11-onefc"):
    _base = PRESETS[_key]
    PRESETS[f"{_key}-192"] = Preset(
        key=f"{_key}-192",
        name=_base.name,
        kind=_base.kind,
        architecture={**_base.architecture, "input_size": 192},
        class_names=_base.class_names,
        size=192,
        epochs=12,
        n_train=2400,
        batch_size=32,
        lr=1e-3,
        description=_base.description.replace("VGG-11", "VGG-11 at 192 px", 1),
        intended_use=_base.intended_use,
        limits=COMMON_LIMITS + VGG_192_LIMITS,
    )
