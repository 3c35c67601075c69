"""RFC 9457 problem details, the body of every error response."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class FieldError(BaseModel):
    field: str = Field(description="dotted path, e.g. params.target.cls")
    message: str


class Problem(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "type": "https://lrpseg.dev/problems/invalid-params",
                    "title": "Invalid parameters",
                    "status": 422,
                    "detail": "params.masks.0: Input should be 'simple', 'gmm', 'bmm' or 'component'",
                    "instance": "/v1/jobs",
                    "request_id": "3b1c0c0e5d0f4d0e9a8d2f6b7c1e4a90",
                    "errors": [
                        {"field": "params.masks.0", "message": "Input should be 'simple', 'gmm', 'bmm' or 'component'"}
                    ],
                }
            ]
        },
    )

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    errors: list[FieldError] | None = None
