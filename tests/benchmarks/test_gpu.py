"""benchmarks/gpu.py in its CPU quick mode: every figure is there and sane (no speed is asserted)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from benchmarks import gpu


@pytest.fixture
def two_threads() -> object:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_quick_cpu_run_reports_speed_memory_split_and_precision(tmp_path: Path, two_threads: object) -> None:
    out = tmp_path / "gpu.json"
    assert gpu.main(["--device", "cpu", "--quick", "--threads", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["speed"]
    assert [(r["size"], r["batch"]) for r in rows] == [(64, 1), (64, 2)]
    for r in rows:
        assert r["device"] == "cpu"
        for stage in ("gradient", "lrp", "masks", "job"):
            assert r[f"{stage}_per_s"] > 0 and r[f"{stage}_peak_mb"] is None  # peak memory: CUDA's allocator only
        assert set(r["split_ms"]) == {"forward", "lrp", "masks", "metrics", "render"}
        assert all(v > 0 for v in r["split_ms"].values())
    assert {p["precision"] for p in report["precision"]} == {"bf16", "fp16"}
    for p in report["precision"]:
        assert p["finite"] and math.isfinite(p["max_abs_error"]) and 0 <= p["max_rel_error"] < 0.5
        assert 0.9 < p["sum_ratio"] < 1.1
        assert 0.0 <= p["iou_gmm"] <= 1.0 and 0.0 <= p["iou_simple"] <= 1.0
