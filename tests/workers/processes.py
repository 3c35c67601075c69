"""Real worker processes (`python -m launch worker`) for the fault tests, and polling helpers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis
from fastapi.testclient import TestClient

from tests.service import factories

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]


def redis_url_of(connection: redis.Redis) -> str:
    """The URL another process uses to reach the same Redis database."""
    kwargs = connection.connection_pool.connection_kwargs
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    return f"redis://{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


def worker_env(redis_url: str, models_dir: Path, **settings: Any) -> dict[str, str]:
    """Environment of a worker process that serves the test queue with the tiny test models."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRPSEG_") and k != "REDIS_URL"}
    env.update(
        {
            "LRPSEG_REDIS_URL": redis_url,
            "LRPSEG_QUEUE_NAME": "lrpseg-test",
            "LRPSEG_KEY_PREFIX": "lrpseg-test",
            "LRPSEG_MODELS_DIR": str(models_dir),
            "LRPSEG_DEFAULT_MODEL": factories.SEGMENTER,
            "LRPSEG_PRELOAD": "default",
            "LRPSEG_DEVICE": "cpu",
            "LRPSEG_TORCH_THREADS": "1",
            "LRPSEG_LOG_LEVEL": "warning",
            "PYTHONPATH": str(ROOT),
        }
    )
    env.update({f"LRPSEG_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def start_worker(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "launch", "worker", *args], env=env, cwd=ROOT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def job_in(client: TestClient, job_id: str, *states: str) -> dict[str, Any] | None:
    """The job's view if its status is one of `states`."""
    response = client.get(f"/v1/jobs/{job_id}")
    if response.status_code != 200:
        return None
    view = response.json()
    return view if view["status"] in states else None
