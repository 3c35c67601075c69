"""A real running service for tests that talk HTTP from outside: uvicorn on a free loopback
port (the app with the test registry) and a real worker process (`python -m launch worker`)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import redis
import uvicorn

from core.settings import Settings
from lrpseg.registry import Registry
from service.app import create_app
from tests.service import factories

REPO = Path(__file__).resolve().parents[2]


def redis_url_of(connection: redis.Redis) -> str:
    kwargs = connection.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    return f"redis://{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


def start_server(app: Any) -> tuple[str, Callable[[], None]]:
    """Serve `app` with uvicorn in a thread on a free loopback port: its base URL and a stop()."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)
        sock.close()

    return f"http://127.0.0.1:{port}", stop


def worker_env(connection: redis.Redis, registry: Registry, settings: Settings, preload: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("LRPSEG_") and k != "REDIS_URL"},
        "REDIS_URL": redis_url_of(connection),
        "LRPSEG_QUEUE_NAME": settings.queue_name,
        "LRPSEG_KEY_PREFIX": settings.key_prefix,
        "LRPSEG_MODELS_DIR": str(registry.dirs[0]),
        "LRPSEG_DEFAULT_MODEL": factories.SEGMENTER,
        "LRPSEG_PRELOAD": preload,
        "LRPSEG_DEVICE": "cpu",
        "LRPSEG_TORCH_THREADS": "1",
        "LRPSEG_PARENT_PID": str(os.getpid()),
        "LRPSEG_LOG_LEVEL": "warning",
        "PYTHONFAULTHANDLER": "1",  # a crash, or a hang (SIGABRT below), prints every thread's stack
        "LIBC_FATAL_STDERR_": "1",  # glibc's own aborts too (it writes to the terminal otherwise)
    }


@contextmanager
def worker_process(
    connection: redis.Redis, registry: Registry, settings: Settings, preload: str = "all"
) -> Iterator[subprocess.Popen]:
    """A real worker process on the settings' queue with the test models; stopped (and checked) after."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "launch", "worker"],
        env=worker_env(connection, registry, settings, preload),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler prints where each thread hangs
            try:
                out, _ = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
    printed = out.decode(errors="replace").split("\nExtension modules:")[0]  # faulthandler's list is long
    assert proc.returncode in (0, -15), f"worker exited {proc.returncode}: {printed[-6000:]}"


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the worker process exited"
        if httpx.get(url + "/readyz", timeout=5).status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError(f"the service was not ready within {timeout} s")


@contextmanager
def live_service(connection: redis.Redis, registry: Registry, settings: Settings) -> Iterator[str]:
    """The API and one worker, ready (every test model loaded); the API's base URL."""
    url, stop = start_server(create_app(settings, registry=registry, connection=connection))
    try:
        with worker_process(connection, registry, settings) as proc:
            wait_ready(url, proc)
            yield url
    finally:
        stop()


def live_settings(**changes: Any) -> Settings:
    """The service tests' settings (tests/service/conftest.py) for a live service."""
    base = {
        "redis_url": "redis://unused",
        "queue_name": "lrpseg-live",
        "key_prefix": "lrpseg-live",
        "device": "cpu",
        "torch_threads": 1,
        "job_timeout": 60,
        "max_wait": 30,
    }
    return Settings(**{**base, **changes})
