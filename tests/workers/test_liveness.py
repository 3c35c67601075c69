"""The worker's liveness file and `lrpseg worker --check` (the containers' liveness probe)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from core import liveness
from core.settings import Settings
from core.stats import Stats
from lrpseg.registry import Registry
from tests.redis_server import RedisServer, free_port
from tests.service import factories
from tests.workers.processes import ROOT, redis_url_of, start_worker, stop, wait_for, worker_env
from workers import runtime
from workers.cli import wait_for_redis


def run_check(heartbeat_file: Path | None, **env: str) -> subprocess.CompletedProcess[str]:
    """`lrpseg worker --check` in a fresh process, as a probe runs it."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LRPSEG_")}
    environ.update({"PYTHONPATH": str(ROOT), "LRPSEG_WORKER_HEARTBEAT": "1", **env})
    if heartbeat_file is not None:
        environ["LRPSEG_HEARTBEAT_FILE"] = str(heartbeat_file)
    command = [sys.executable, "-m", "launch", "worker", "--check"]
    return subprocess.run(command, env=environ, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_check_passes_on_a_fresh_file_and_fails_on_a_stale_or_missing_one(tmp_path: Path) -> None:
    alive = tmp_path / "alive"
    missing = run_check(alive)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    liveness.touch(alive)
    assert alive.read_text().split()[1] == str(os.getpid())
    assert run_check(alive).returncode == 0
    old = time.time() - 10  # LRPSEG_WORKER_HEARTBEAT=1: older than 3 s is stale
    os.utime(alive, (old, old))
    stale = run_check(alive)
    assert stale.returncode == 1 and "stopped beating" in stale.stderr
    unset = run_check(None)
    assert unset.returncode == 2 and "LRPSEG_HEARTBEAT_FILE" in unset.stderr


def test_the_heartbeat_keeps_the_file_fresh_until_the_worker_stops(
    tmp_path: Path, settings: Settings, redis_conn: redis.Redis, registry: Registry
) -> None:
    alive = tmp_path / "alive"
    settings = settings.model_copy(update={"heartbeat_file": alive, "worker_heartbeat": 0.2, "preload": "default"})
    rt = runtime.start(settings, connection=redis_conn, registry=registry, name="w-alive")
    first = alive.stat().st_mtime  # touched once the models are loaded
    wait_for(lambda: alive.stat().st_mtime > first, 10, "a second beat", interval=0.05)
    assert liveness.check(alive, settings.worker_max_age) is None
    rt.stop()
    time.sleep(0.5)
    stopped = alive.stat().st_mtime
    time.sleep(0.5)
    assert alive.stat().st_mtime == stopped
    assert liveness.check(alive, 0.4) is not None


def test_a_worker_waiting_for_redis_stays_alive(tmp_path: Path) -> None:
    """Redis away: `work_until_stopped` waits for it, and the probe must not restart the worker."""
    server = RedisServer(tmp_path / "redis", port=free_port())
    alive = tmp_path / "alive"
    touches: set[float] = set()
    waiting = threading.Event()

    def watch() -> None:
        while not waiting.wait(0.05):
            if alive.exists():
                touches.add(alive.stat().st_mtime)

    later = threading.Timer(2.0, server.start)
    watcher = threading.Thread(target=watch)
    later.start()
    watcher.start()
    try:
        connection = redis.Redis(port=server.port, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
        assert wait_for_redis(connection, alive, max_wait=0.5)
    finally:
        waiting.set()
        watcher.join()
        later.join()
        server.stop()
    assert len(touches) >= 3, touches  # touched every ~0.5 s while Redis was away, not once


@pytest.mark.slow
def test_a_worker_pool_beats_while_all_its_workers_do(tmp_path: Path, redis_conn: redis.Redis) -> None:
    """`lrpseg worker --workers 2`: two supervised workers, one liveness file for the container."""
    factories.write_models(tmp_path / "models")
    alive = tmp_path / "alive"
    env = worker_env(redis_url_of(redis_conn), tmp_path / "models", heartbeat_file=alive, worker_heartbeat=1)
    pool = start_worker(env, "--workers", "2")
    try:
        wait_for(lambda: run_check(alive).returncode == 0, 90, "the pool to beat", interval=0.5)
        seen = Stats(redis_conn, "lrpseg-test").live_workers(max_age=10)
        assert len(seen) == 2 and {w.device for w in seen} == {"cpu"}
        slot = alive.with_name("alive.1")
        pid = int(slot.read_text().split()[1])  # the slot's worker wrote its pid
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: int(slot.read_text().split()[1]) != pid, 90, "a replacement worker", interval=0.5)
        # the pool's file is fresh again once its next round (1 s) finds every worker beating
        wait_for(lambda: run_check(alive).returncode == 0, 15, "the pool to beat again", interval=0.5)
        pool.send_signal(signal.SIGTERM)
        assert pool.wait(timeout=60) == 0
        # both retired; only the SIGKILLed worker's last beat (before the kill) may not have aged out yet
        left = Stats(redis_conn, "lrpseg-test").live_workers(max_age=10)
        assert all(w.seen <= killed_at for w in left), left
    finally:
        stop(pool)
