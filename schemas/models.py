"""Model listing as the API returns it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ModelOut(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    id: str = Field(description="name@version, the reference to put in params.model")
    name: str
    version: str
    kind: str = Field(description="segmenter or classifier")
    family: str
    in_channels: int
    num_classes: int
    class_names: list[str]
    input_size: int | None = Field(None, description="fixed input side for classifiers; None = any size")
    zbox_bounds: tuple[float, float]
    description: str = ""
    default: bool = False
    spatial_dims: int = Field(2, description="2: images (N, C, H, W); 3: volumes (N, C, D, H, W)")
    domain: dict[str, Any] | None = Field(
        None, description="inputs the model is made for: DICOM modalities and a description; others are refused"
    )
    intended_use: str = ""
    segment_codes: dict[str, dict[str, dict[str, str]]] = Field(
        default_factory=dict, description="class -> DICOM SEG category and type codes (scheme, value, meaning)"
    )
    input_window: dict[str, float] | None = Field(
        None, description="default window (center/width in source values); a job's params.input.window overrides it"
    )
    research_use_only: bool = Field(True, description="DICOM outputs are marked research use only (docs/pacs.md)")


class ModelList(BaseModel):
    default: str
    models: list[ModelOut]
