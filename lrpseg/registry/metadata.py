"""What clinical (and industrial) use needs to know about a model, declared in its config.json.

    "domain":        {"modalities": ["OT", "XC"], "description": "grey surface photographs"}
    "intended_use":  "free text for people"
    "segment_codes": {"defect": {"category": {"scheme": "SCT", "value": "260787004", "meaning": "Physical object"},
                                 "type":     {"scheme": "99LRPSEG", "value": "SURFDEF", "meaning": "Surface defect"}}}
    "input_window":  {"center": 40, "width": 400}     # in the source's units (DICOM: after Rescale; NIfTI: scaled)
    "research_use_only": true                         # false only for a model cleared for clinical use

Every key is optional. Without a domain no input is refused for its modality; without
segment codes a class is coded as DICOM SEG's former generic "Morphologically Abnormal
Structure / Lesion" (docs/models.md says why to declare your own); without a window the
decoder's own scaling (DICOM VOI, else min-max) is used; a job's params.input.window
overrides it (lrpseg.inputs.resolve_input). Every DICOM output of a model is marked research
use only unless it declares "research_use_only": false (lrpseg.io.dicom_labels).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lrpseg.registry.errors import RegistryError

__all__ = [
    "DEFAULT_SEGMENT",
    "Code",
    "Domain",
    "InputWindow",
    "ModelMetadata",
    "SegmentCoding",
    "read_metadata",
]

MODALITY = re.compile(r"^[A-Z0-9_]{1,16}$")  # DICOM CS: upper case, digits, underscore, at most 16
SCHEME = re.compile(r"^[A-Za-z0-9_.\-]{1,16}$")  # DICOM SH coding scheme designator


@dataclass(frozen=True)
class Code:
    """A coded concept as DICOM writes it: (coding scheme designator, code value, code meaning)."""

    scheme: str
    value: str
    meaning: str

    def to_dict(self) -> dict[str, str]:
        return {"scheme": self.scheme, "value": self.value, "meaning": self.meaning}


@dataclass(frozen=True)
class SegmentCoding:
    """Segmented Property Category and Type of one class in a DICOM SEG."""

    category: Code
    type: Code

    def to_dict(self) -> dict[str, dict[str, str]]:
        return {"category": self.category.to_dict(), "type": self.type.to_dict()}


# The coding every segment had before models declared their own (PS3.16 CID 7150 / 7151).
DEFAULT_SEGMENT = SegmentCoding(
    category=Code("SCT", "49755003", "Morphologically Abnormal Structure"),
    type=Code("SCT", "52988006", "Lesion"),
)


@dataclass(frozen=True)
class Domain:
    """The inputs a model was made for: DICOM Modality values (CS) and a sentence for people."""

    modalities: tuple[str, ...]
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"modalities": list(self.modalities), "description": self.description}


@dataclass(frozen=True)
class InputWindow:
    """Linear window [center - width/2, center + width/2] -> [0, 1] on the source's values, clipped."""

    center: float
    width: float

    @property
    def low(self) -> float:
        return self.center - self.width / 2

    @property
    def high(self) -> float:
        return self.center + self.width / 2

    def to_dict(self) -> dict[str, float]:
        return {"center": self.center, "width": self.width}


@dataclass(frozen=True)
class ModelMetadata:
    domain: Domain | None = None
    intended_use: str = ""
    segment_codes: dict[str, SegmentCoding] = field(default_factory=dict)
    input_window: InputWindow | None = None
    research_use_only: bool = True

    def coding(self, class_name: str) -> SegmentCoding:
        """The declared coding of a class, else DEFAULT_SEGMENT."""
        return self.segment_codes.get(class_name, DEFAULT_SEGMENT)

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain.to_dict() if self.domain else None,
            "intended_use": self.intended_use,
            "segment_codes": {k: v.to_dict() for k, v in self.segment_codes.items()},
            "input_window": self.input_window.to_dict() if self.input_window else None,
            "research_use_only": self.research_use_only,
        }


def _fail(directory: Path, problem: str) -> RegistryError:
    return RegistryError(f"model directory {directory}: {problem}")


def read_code(directory: Path, value: Any, where: str) -> Code:
    if not isinstance(value, dict) or set(value) != {"scheme", "value", "meaning"}:
        raise _fail(directory, f'{where} must be {{"scheme": ..., "value": ..., "meaning": ...}}, got {value!r}')
    scheme, code, meaning = value["scheme"], value["value"], value["meaning"]
    if not isinstance(scheme, str) or not SCHEME.match(scheme):
        raise _fail(directory, f"{where}.scheme must be a coding scheme designator such as SCT or DCM, got {scheme!r}")
    for label, text, limit in (("value", code, 64), ("meaning", meaning, 64)):
        if not isinstance(text, str) or not text.strip() or len(text) > limit or "\\" in text:
            raise _fail(directory, f"{where}.{label} must be 1-{limit} characters without backslash, got {text!r}")
    return Code(scheme, code, meaning)


def read_domain(directory: Path, value: Any) -> Domain | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("modalities"), list) or not value["modalities"]:
        raise _fail(directory, 'domain must be {"modalities": ["OT", ...], "description": "..."}')
    if set(value) - {"modalities", "description"}:
        raise _fail(directory, f"domain has unknown keys {sorted(set(value) - {'modalities', 'description'})}")
    modalities = value["modalities"]
    if not all(isinstance(m, str) and MODALITY.match(m) for m in modalities):
        raise _fail(directory, f"domain.modalities must be DICOM Modality values (CT, MR, OT, ...), got {modalities!r}")
    return Domain(tuple(modalities), str(value.get("description", "")))


def read_segment_codes(directory: Path, value: Any, class_names: list[str]) -> dict[str, SegmentCoding]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(directory, "segment_codes must map class names to {category, type} codes")
    unknown = sorted(set(value) - set(class_names))
    if unknown:
        raise _fail(directory, f"segment_codes names classes the model does not have: {unknown}")
    out = {}
    for name, coding in value.items():
        if not isinstance(coding, dict) or set(coding) != {"category", "type"}:
            raise _fail(directory, f'segment_codes.{name} must be {{"category": code, "type": code}}')
        out[name] = SegmentCoding(
            read_code(directory, coding["category"], f"segment_codes.{name}.category"),
            read_code(directory, coding["type"], f"segment_codes.{name}.type"),
        )
    return out


def read_window(directory: Path, value: Any) -> InputWindow | None:
    if value is None:
        return None
    ok = isinstance(value, dict) and set(value) == {"center", "width"}
    numbers = ok and all(isinstance(value[k], (int, float)) and not isinstance(value[k], bool) for k in value)
    if not numbers or not value["width"] > 0:
        raise _fail(directory, f'input_window must be {{"center": number, "width": positive number}}, got {value!r}')
    return InputWindow(float(value["center"]), float(value["width"]))


def read_metadata(directory: Path, config: dict[str, Any], class_names: list[str]) -> ModelMetadata:
    """The clinical metadata of a config.json, checked (RegistryError names the key)."""
    intended = config.get("intended_use", "")
    if not isinstance(intended, str):
        raise _fail(directory, "intended_use must be a string")
    research = config.get("research_use_only", True)
    if not isinstance(research, bool):
        raise _fail(directory, "research_use_only must be true or false")
    return ModelMetadata(
        research_use_only=research,
        domain=read_domain(directory, config.get("domain")),
        intended_use=intended,
        segment_codes=read_segment_codes(directory, config.get("segment_codes"), class_names),
        input_window=read_window(directory, config.get("input_window")),
    )
