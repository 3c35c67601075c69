"""Model listing as the API returns it."""

from __future__ import annotations

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


class ModelList(BaseModel):
    default: str
    models: list[ModelOut]
