"""`lrpseg dimse` as its own process: settings from the environment, C-ECHO, C-STORE, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from core.settings import get_settings
from launch.cli import main
from tests.pacs.factories import ct_series

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_dimse_command_receives_until_sigterm(redis_conn: redis.Redis) -> None:
    port = free_port()
    url = redis_conn.connection_pool.connection_kwargs
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REDIS_URL": f"redis://{url.get('host', '127.0.0.1')}:{url.get('port', 6379)}/{url.get('db', 0)}",
        "LRPSEG_KEY_PREFIX": "lrpseg-test",
        "LRPSEG_DIMSE_ALLOWED_AES": "ORTHANC",
        "LRPSEG_DICOM_ROUTES": json.dumps([{"match": {"Modality": "C?"}, "model": "tiny-unet3d@1"}]),
        "LRPSEG_LOG_FORMAT": "text",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "launch", "dimse", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        scu = AE(ae_title="ORTHANC")
        scu.add_requested_context(Verification)
        scu.add_requested_context(CTImageStorage)
        deadline = time.monotonic() + 30
        while not (assoc := scu.associate("127.0.0.1", port, ae_title="LRPSEG")).is_established:
            assert process.poll() is None and time.monotonic() < deadline, process.stdout and process.stdout.read()
            time.sleep(0.2)
        assert assoc.send_c_echo().Status == 0
        assert assoc.send_c_store(ct_series(1, seed=20)[0]).Status == 0
        assoc.release()
        assert len(redis_conn.keys("lrpseg-test:intake-data:*")) == 1
    finally:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, out
    assert "listening" in out and "PatientName" not in out


def test_dimse_command_refuses_bad_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    get_settings.cache_clear()
    monkeypatch.setenv("LRPSEG_DICOM_ROUTES", '[{"match": {"PatientName": "X*"}, "model": "m@1"}]')
    try:
        assert main(["dimse"]) == 2
    finally:
        get_settings.cache_clear()
    assert "route matches on Modality" in capsys.readouterr().err
