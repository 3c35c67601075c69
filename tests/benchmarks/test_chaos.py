"""A short run of benchmarks/chaos.py: workers stopped, continued and killed, Redis killed and
restarted while jobs go in; no accepted job may be lost and no ended job may change its status."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.chaos import main
from tests.service import factories


@pytest.mark.slow
def test_no_job_is_lost_or_flipped_under_chaos(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    factories.write_models(tmp_path / "models")
    args = [
        "--jobs", "6", "--workers", "2", "--size", "64", "--chaos", "12", "--drain", "45",
        "--models-dir", str(tmp_path / "models"), "--model", factories.SEGMENTER, "--seed", "3",
        "--json", str(tmp_path / "chaos.json"),
    ]  # fmt: skip
    status = main(args)
    out = capsys.readouterr().out
    assert "lost 0  flipped 0" in out, out
    assert status == 0
    assert "accepted 6" in out  # every submission got in, Redis restarts or not
