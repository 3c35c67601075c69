"""A quick run of benchmarks/pacs.py (4 slices, one run): Orthanc -> lrpseg -> job -> SEG back in
Orthanc, pushed by STOW-RS and pulled by WADO-RS, and the split of the time."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.pacs import STEPS, measure, parse
from tests.orthanc_server import requires_orthanc


@requires_orthanc
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["push", "pull"])
def test_a_quick_run_puts_the_seg_back_and_splits_the_time(mode: str, tmp_path: Path) -> None:
    lines: list[str] = []
    args = parse(["--mode", mode, "--slices", "4", "--repeats", "1", "--warmup", "0", "--threads", "1"])
    med = measure(args, tmp_path, lines.append)  # asserts the SEG and the map are in Orthanc
    assert set(med) == set(STEPS) and all(value >= 0 for value in med.values())
    assert (med["send_s"] > 0) == (mode == "push")  # a pull job has nothing sent to lrpseg
    assert 0 < med["in_job_s"] < med["job_s"]
    assert lines[0].startswith("4 slices of 64x64 OT, unet-defects@1, ")
    assert lines[3].startswith(f"| {mode} | 4 | ")
