"""`lrpseg explain`'s pieces that need no server (the whole flow against `lrpseg serve` is in
tests/service/test_serve.py)."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import pytest

from launch import explain


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    explain.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_params_from_json_file_or_model_flag(tmp_path: Path) -> None:
    assert explain.load_params('{"masks": ["gmm"]}', None) == {"masks": ["gmm"]}
    (tmp_path / "p.json").write_text('{"task": "segment"}')
    assert explain.load_params(f"@{tmp_path / 'p.json'}", "unet-defects@1") == {
        "task": "segment",
        "model": "unet-defects@1",
    }
    with pytest.raises(explain.UsageError, match="JSON object"):
        explain.load_params("[1]", None)


def test_unreachable_service_says_how_to_start_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "x.png").write_bytes(b"not really a png")
    args = parse(str(tmp_path / "x.png"), "--url", f"http://127.0.0.1:{port}", "--quiet", "--out", str(tmp_path / "o"))
    assert explain.run(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("lrpseg explain: connection refused") and f"running at http://127.0.0.1:{port}" in err
    assert "make serve" in err and not (tmp_path / "o").exists()


def test_a_non_empty_out_is_refused_and_only_ours_is_cleared(tmp_path: Path) -> None:
    out = tmp_path / "out"
    explain.check_out(out, overwrite=False)
    assert not out.exists()  # nothing is made before a job has finished
    explain.make_out(out)
    assert [p.name for p in out.iterdir()] == [explain.OUT_MARK]
    (out / "relevance.png").write_bytes(b"an earlier job's")
    with pytest.raises(explain.UsageError, match="not empty; pass --overwrite"):
        explain.check_out(out, overwrite=False)
    explain.check_out(out, overwrite=True)
    explain.make_out(out)
    assert [p.name for p in out.iterdir()] == [explain.OUT_MARK]  # the earlier files are gone
    theirs = tmp_path / "thesis"
    theirs.mkdir()
    (theirs / "chapter1.tex").write_text("years of work")
    with pytest.raises(explain.UsageError, match="not written by lrpseg explain"):
        explain.check_out(theirs, overwrite=True)
    assert (theirs / "chapter1.tex").exists()


def test_folders_expand_to_their_images(tmp_path: Path) -> None:
    for name in ("b.png", "a.tif", "notes.txt", "c.npy"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    assert [p.name for p in explain.expand([tmp_path])] == ["a.tif", "b.png", "c.npy"]
    (tmp_path / "sub" / "a.png").write_bytes(b"x")
    with pytest.raises(explain.UsageError, match="several images are named a"):
        explain.expand([tmp_path, tmp_path / "sub"])
    with pytest.raises(explain.UsageError, match="no such file"):
        explain.expand([tmp_path / "missing.png"])


def test_summary_prints_times_in_ms_the_batch_size_and_warnings() -> None:
    result = {"model": {"id": "m@1"}, "timings": {"forward": 12.0, "lrp": 30.5, "total": 50.0, "batch_size": 4}}
    line = explain.summary(result).splitlines()[-1]
    assert line == "timings   forward 12.0 ms, lrp 30.5 ms, total 50.0 ms (a batch of 4)"
    result["timings"]["batch_size"] = 1
    assert "batch" not in explain.summary(result)
    result["warnings"] = ["the model predicts no 'defect' pixels"]
    assert explain.summary(result).splitlines()[-1] == "WARNING   the model predicts no 'defect' pixels"
