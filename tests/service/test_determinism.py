"""The same input, model and params give byte-identical results through the API and a worker.

Two submissions of one image run as two jobs on a real RQ worker; everything but timings and
the job-specific URLs must be equal byte for byte: the result JSON as the API serves it and
every artifact, relevance.npy included.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.service import factories


def comparable(result: dict[str, Any]) -> bytes:
    """The result JSON without what differs by design: timings and the job's own URLs."""
    result = dict(result)
    result.pop("timings")
    result["artifacts"] = [{k: v for k, v in a.items() if k != "url"} for a in result["artifacts"]]
    return json.dumps(result, sort_keys=True).encode()


def run_once(client: TestClient, work: Callable[[], bool], files: dict, params: dict) -> tuple[bytes, dict]:
    response = client.post("/v1/jobs", files=files, data={"params": json.dumps(params)})
    assert response.status_code == 202, response.text
    location = response.headers["location"]
    assert work()
    view = client.get(location).json()
    assert view["status"] == "finished", view
    artifacts = {}
    for item in view["result"]["artifacts"]:
        got = client.get(item["url"])
        assert got.status_code == 200
        artifacts[item["name"]] = got.content
    return comparable(view["result"]), artifacts


@pytest.mark.parametrize(
    "params",
    [
        {},  # LRP "ours", all three masks (GMM's k-means included), every artifact
        {
            "lrp": {"composite": "epsilon-gamma-box"},
            "target": {"kind": "region", "region": [{"x0": 8, "y0": 8, "x1": 40, "y1": 40}]},
        },
        {"method": "seg-hires-grad-cam"},
    ],
    ids=["ours", "epsilon-gamma-box-region", "seg-hires-grad-cam"],
)
def test_same_input_gives_byte_identical_results(
    client: TestClient, work: Callable[[], bool], params: dict[str, Any]
) -> None:
    image, truth = factories.defect_image(64, seed=3)
    files = {
        "image": ("part.png", factories.png_bytes(image), "image/png"),
        "ground_truth": ("truth.png", factories.png_bytes(truth.astype(np.uint8) * 255), "image/png"),
    }
    first_json, first_artifacts = run_once(client, work, files, params)
    second_json, second_artifacts = run_once(client, work, files, params)
    assert first_json == second_json
    assert set(first_artifacts) == set(second_artifacts) and "relevance.npy" in first_artifacts
    for name, data in first_artifacts.items():
        assert data == second_artifacts[name], f"{name} differs between two runs of the same job"
    relevance = np.load(io.BytesIO(first_artifacts["relevance.npy"]))
    assert relevance.dtype == np.float32 and np.abs(relevance).sum() > 0  # a real map, not an empty one


def test_deterministic_kernels_are_asked_for_on_cuda_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The switches a CUDA worker sets before its first CUDA call (no GPU needed to set them)."""
    import torch

    from workers.runtime import deterministic_kernels

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    mode = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        deterministic_kernels(torch.device("cpu"))
        assert not torch.are_deterministic_algorithms_enabled() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
        deterministic_kernels(torch.device("cuda", 0))
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before
        torch.use_deterministic_algorithms(mode[0], warn_only=mode[1])
