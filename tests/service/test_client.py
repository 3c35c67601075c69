"""`lrpseg explain`'s pieces that need no server (the whole flow runs in test_serve.py)."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import pytest

from service import client


def test_params_from_json_file_or_model_flag(tmp_path: Path) -> None:
    assert client.load_params('{"masks": ["gmm"]}', None) == {"masks": ["gmm"]}
    (tmp_path / "p.json").write_text('{"task": "segment"}')
    assert client.load_params(f"@{tmp_path / 'p.json'}", "unet-defects@1") == {
        "task": "segment",
        "model": "unet-defects@1",
    }
    with pytest.raises(client.ClientError, match="JSON object"):
        client.load_params("[1]", None)


def test_unreachable_service_is_a_message_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "x.png").write_bytes(b"not really a png")
    parser = argparse.ArgumentParser()
    client.add_arguments(parser)
    args = parser.parse_args([str(tmp_path / "x.png"), "--url", f"http://127.0.0.1:{port}", "--quiet"])
    assert client.run(args) == 1
    assert capsys.readouterr().err.startswith("lrpseg explain: ")


def test_summary_prints_times_in_ms_and_the_batch_size_as_a_count() -> None:
    result = {"model": {"id": "m@1"}, "timings": {"forward": 12.0, "lrp": 30.5, "total": 50.0, "batch_size": 4}}
    line = client.summary(result).splitlines()[-1]
    assert line == "timings   forward 12.0 ms, lrp 30.5 ms, total 50.0 ms (a batch of 4)"
    result["timings"]["batch_size"] = 1
    assert "batch" not in client.summary(result)
