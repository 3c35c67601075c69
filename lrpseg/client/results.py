"""Typed answers: a submitted job, a finished job's result with its arrays."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Submitted:
    """A queued job: its id and the URL to poll."""

    job_id: str
    url: str
    name: str | None = None  # the file name it was sent as (batches)


@dataclass
class Result:
    """A finished job. `result` is the service's JSON (metrics, params used, timings);
    `relevance` is relevance.npy (C, H, W) float32 and `segmentation` segmentation.npy (H, W)
    class indices, each None when the job did not produce it."""

    job_id: str
    model: str
    result: dict[str, Any]
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> URL
    relevance: np.ndarray | None = None
    segmentation: np.ndarray | None = None

    @property
    def warnings(self) -> list[str]:
        return list(self.result.get("warnings") or [])

    @property
    def explanation(self) -> dict[str, Any] | None:
        return self.result.get("explanation")

    @property
    def masks(self) -> dict[str, Any]:
        return dict(self.result.get("masks") or {})
