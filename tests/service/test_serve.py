"""`lrpseg serve` as a new user runs it: embedded Redis, a worker process, the API; then
`lrpseg explain` against it; then SIGTERM stops everything."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from launch import explain as explain_client
from tests.service import factories

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"lrpseg serve exited with {proc.returncode}"
        try:
            response = httpx.get(url + "/readyz", timeout=2)
            last = response.json()
            if response.status_code == 200:
                return last
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"not ready after {timeout} s: {last}")


def start_serve(tmp_path: Path, **extra_env: str) -> tuple[subprocess.Popen[bytes], str]:
    """`lrpseg serve` with the tiny test models, its embedded Redis in tmp_path, one worker."""
    factories.write_models(tmp_path / "models")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "LRPSEG_REDIS_URL")}
    env.update(
        {
            "LRPSEG_MODELS_DIR": str(tmp_path / "models"),
            "LRPSEG_DEFAULT_MODEL": factories.SEGMENTER,
            "LRPSEG_DATA_DIR": str(tmp_path / "var"),
            "LRPSEG_TORCH_THREADS": "1",
            "LRPSEG_LOG_LEVEL": "warning",
            **extra_env,
        }
    )
    command = [sys.executable, "-m", "launch", "serve", "--port", str(port), "--workers", "1"]
    return subprocess.Popen(command, env=env, cwd=tmp_path), f"http://127.0.0.1:{port}"


def test_serve_explain_and_stop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proc, url = start_serve(tmp_path)
    try:
        ready = wait_ready(url, proc)
        assert ready["checks"]["workers"]["detail"] == "1 alive"
        children = psutil.Process(proc.pid).children(recursive=True)
        kinds = sorted("watchdog" if "service.embedded" in " ".join(c.cmdline()) else "worker" for c in children)
        assert kinds == ["watchdog", "worker"]  # Redis daemonises itself; the watchdog stops it if we die

        image, truth = factories.defect_image(64)
        (tmp_path / "part.png").write_bytes(factories.png_bytes(image))
        (tmp_path / "truth.png").write_bytes(factories.png_bytes(truth.astype(np.uint8) * 255))
        args = argparse.ArgumentParser()
        explain_client.add_arguments(args)
        argv = [
            str(tmp_path / "part.png"),
            "--url",
            url,
            "--out",
            str(tmp_path / "out"),
            "--ground-truth",
            str(tmp_path / "truth.png"),
            "--params",
            '{"masks": ["gmm"]}',
        ]
        parsed = args.parse_args(argv)
        assert explain_client.run(parsed) == 0
        out = capsys.readouterr().out
        assert "conservation=" in out and "mask gmm" in out
        saved = sorted(p.name for p in (tmp_path / "out").iterdir())
        assert {"relevance.png", "overlay.png", "mask-gmm.png", "relevance.npy", "result.json"} <= set(saved)

        # The same --out again: refused (the earlier files stay), then replaced with --overwrite.
        assert explain_client.run(parsed) == 2
        assert "not empty; pass --overwrite" in capsys.readouterr().err
        (tmp_path / "out" / "stale.png").write_bytes(b"from before")
        assert explain_client.run(args.parse_args([*argv, "--overwrite"])) == 0
        assert not (tmp_path / "out" / "stale.png").exists() and (tmp_path / "out" / "mask-gmm.png").exists()

        # A folder: one job each, results under --out/<stem>/, a warning for the blank one.
        folder = tmp_path / "parts"
        folder.mkdir()
        (folder / "a.png").write_bytes(factories.png_bytes(factories.defect_image(64, 1)[0]))
        (folder / "blank.png").write_bytes(factories.png_bytes(np.zeros((64, 64), np.uint8)))
        batch = args.parse_args(
            [str(folder), "--url", url, "--out", str(tmp_path / "many"), "--params", '{"masks": []}']
        )
        assert explain_client.run(batch) == 0
        captured = capsys.readouterr()
        assert "2 of 2 images explained" in captured.out
        assert "blank.png: WARNING" in captured.err and "2/2" in captured.err  # the warning and the progress bar
        for stem in ("a", "blank"):
            assert (tmp_path / "many" / stem / "relevance.npy").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    assert rc == 0
    for child in children:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    assert (tmp_path / "var" / "redis.db").exists()  # the embedded Redis saved on the way out


def test_serve_starts_a_new_worker_when_one_is_killed(tmp_path: Path) -> None:
    proc, url = start_serve(tmp_path, LRPSEG_PRELOAD="default")
    try:
        wait_ready(url, proc)
        (first,) = workers_of(proc)
        first.kill()  # SIGKILL, as the kernel's OOM killer would
        first.wait(timeout=10)

        def replaced() -> list[psutil.Process]:
            return [c for c in workers_of(proc) if c.pid != first.pid and c.is_running()]

        deadline = time.monotonic() + 30
        while not replaced() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(replaced()) == 1, "serve did not start another worker"
        image = factories.png_bytes(factories.defect_image(64)[0])
        files = {"image": ("part.png", image, "image/png")}
        response = httpx.post(url + "/v1/explain", params={"wait": 60}, files=files, timeout=90)
        assert response.status_code == 200 and response.json()["status"] == "finished", response.text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def test_serve_owns_its_redis_killed_or_left_behind(tmp_path: Path) -> None:
    """Issue 15: a SIGKILLed `lrpseg serve` left its Redis running, and a restart ran a second one
    on the same data. Now a left-behind Redis is stopped at the next start, and a SIGKILLed
    serve's Redis is stopped by its watchdog."""
    owner_file = tmp_path / "var" / "redis.owner.json"
    first, url = start_serve(tmp_path)
    try:
        wait_ready(url, first)
        stale = json.loads(owner_file.read_text())["redis_pid"]
        for child in psutil.Process(first.pid).children():
            if "service.embedded" in " ".join(child.cmdline()):
                child.kill()  # no watchdog: the old behaviour, Redis outlives serve
        first.kill()
        first.wait(timeout=10)
        time.sleep(1)
        assert psutil.pid_exists(stale), "the Redis should still run (no watchdog)"
    finally:
        stop_quietly(first)
    second, url = start_serve(tmp_path)
    try:
        wait_ready(url, second)
        assert not psutil.pid_exists(stale) or psutil.Process(stale).status() == psutil.STATUS_ZOMBIE
        mine = json.loads(owner_file.read_text())["redis_pid"]
        assert mine != stale
        second.kill()  # SIGKILL: no cleanup in serve; the watchdog stops its Redis
        second.wait(timeout=10)
        deadline = time.monotonic() + 15
        while psutil.pid_exists(mine) and psutil.Process(mine).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the Redis outlived its serve"
            time.sleep(0.2)
    finally:
        stop_quietly(second)


def stop_quietly(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def workers_of(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The worker processes of a serve (not its Redis watchdog)."""
    return [c for c in psutil.Process(proc.pid).children() if "service.embedded" not in " ".join(c.cmdline())]
