"""The Open Inference Protocol v2 (KServe v2 / Triton HTTP) wire shapes that lrpseg speaks.

See https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/ ; field names
are the protocol's. Parameters are a flat map of string, number or bool values.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

ParamValue = str | int | float | bool
MAX_TENSORS = 8


class TensorMetadata(BaseModel):
    name: str
    datatype: str = Field(description="BOOL, UINT8…UINT64, INT8…INT64, FP16, FP32, FP64 or BYTES")
    shape: list[int] = Field(description="-1 where the size varies")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, ParamValue] = Field(default_factory=dict, description="lrpseg: model kind and classes")


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class InferInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    shape: list[int] = Field(max_length=4)
    datatype: str
    parameters: dict[str, ParamValue] | None = Field(None, description="binary_data_size with the binary extension")
    data: list[Any] | None = Field(None, description="row-major values (flat or nested); absent with binary data")


class RequestedOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    parameters: dict[str, ParamValue] | None = Field(None, description="binary_data: true for a binary tensor")


class InferRequest(BaseModel):
    """POST /v2/models/{name}/infer. Explanation settings go in `parameters` (see docs/interop.md)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "inputs": [
                        {"name": "image", "shape": [1, 1, 2, 2], "datatype": "UINT8", "data": [0, 64, 128, 255]}
                    ],
                    "parameters": {"composite": "montavon", "masks": "gmm"},
                }
            ]
        },
    )

    id: str | None = Field(None, max_length=256)
    parameters: dict[str, ParamValue] | None = None
    inputs: list[InferInput] = Field(min_length=1, max_length=MAX_TENSORS)
    outputs: list[RequestedOutput] | None = Field(None, max_length=MAX_TENSORS)


class InferOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, ParamValue] | None = None
    data: list[Any] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str
    parameters: dict[str, ParamValue] | None = None
    outputs: list[InferOutput]
