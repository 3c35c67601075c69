"""`lrpseg worker`: run one RQ worker against REDIS_URL."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from redis import Redis
from redis.exceptions import RedisError

from core import liveness, logs
from core.settings import Settings
from lrpseg.heap import use_huge_pages

if TYPE_CHECKING:
    from workers.worker import ModelWorker

log = logging.getLogger("lrpseg.worker")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", help="Redis to use (default: REDIS_URL)")
    parser.add_argument("--queue", help="queue name (default: LRPSEG_QUEUE_NAME or lrpseg)")
    parser.add_argument("--name", help="worker name (default: host.pid)")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: LRPSEG_DEVICE or auto)")
    parser.add_argument("--threads", type=int, help="torch threads (default: LRPSEG_TORCH_THREADS or torch's)")
    parser.add_argument("--burst", action="store_true", help="run the queued jobs, then exit")
    parser.add_argument("--max-jobs", type=int, help="exit after this many jobs")
    parser.add_argument(
        "--workers",
        type=int,
        help="run this many supervised worker processes (0: one per visible GPU); "
        "with --device cuda or auto each gets its own GPU, round-robin",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="liveness probe: exit 0 if the worker's LRPSEG_HEARTBEAT_FILE is fresh, else 1 (starts nothing)",
    )


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = {
        "redis_url": args.redis_url,
        "queue_name": args.queue,
        "device": args.device,
        "torch_threads": args.threads,
        "worker_name": args.name,
    }
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.check:
        return check_alive(settings)
    if not settings.redis_configured:
        print(
            "lrpseg worker: set REDIS_URL or LRPSEG_REDIS_SENTINELS (or run `lrpseg serve`, which embeds Redis)",
            file=sys.stderr,
        )
        return 2
    logs.configure(settings.log_level, settings.log_format)
    if args.workers is not None:
        return run_pool(settings, args.workers)
    use_huge_pages()  # before torch is imported (lrpseg.heap)
    from workers.worker import build_worker  # torch and the models: not for --check

    worker = build_worker(settings)
    return work_until_stopped(worker, burst=args.burst, max_jobs=args.max_jobs, logging_level=settings.log_level)


def run_pool(settings: Settings, workers: int) -> int:
    """`lrpseg worker --workers N`: N `lrpseg worker` processes, one per GPU (`lrpseg serve`'s
    supervised pool without the API), until SIGTERM/SIGINT; then each finishes its job (warm
    stop, up to `shutdown_grace` s)."""
    from core.pool import WorkerPool, gpu_count

    gpus = gpu_count()
    count = workers if workers > 0 else max(1, gpus)
    pool = WorkerPool(settings.model_copy(update={"workers": count}), settings.redis_url, gpus=gpus)
    log.info("%d worker(s) on %s", count, ", ".join(pool.devices))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    pool.stop(settings.shutdown_grace)
    return 0


def check_alive(settings: Settings) -> int:
    """`lrpseg worker --check`: the worker of this container beat within 3 heartbeats."""
    if settings.heartbeat_file is None:
        print("lrpseg worker --check: set LRPSEG_HEARTBEAT_FILE (the worker writes it)", file=sys.stderr)
        return 2
    problem = liveness.check(settings.heartbeat_file, settings.worker_max_age)
    if problem is not None:
        print(f"lrpseg worker --check: {problem}", file=sys.stderr)
        return 1
    return 0


def work_until_stopped(worker: ModelWorker, *, burst: bool, max_jobs: int | None, logging_level: str) -> int:
    """RQ's loop survives Redis outages while it waits for jobs, but quits on one between or
    inside jobs (and may then raise from its teardown). Start it again once Redis answers, with
    the same loaded models, until a stop is asked for (SIGTERM/SIGINT) or the work is done."""
    done = 0
    while True:
        try:
            left = None if max_jobs is None else max_jobs - done
            worker.work(burst=burst, max_jobs=left, logging_level=logging_level.upper())
        except RedisError as exc:
            log.warning("worker loop ended on %s", type(exc).__name__)
        done += worker.jobs_done
        if worker.stopping or burst or (max_jobs is not None and done >= max_jobs):
            return 0
        log.warning("worker loop ended unexpectedly; waiting for Redis to start again")
        if not wait_for_redis(worker.connection, worker.runtime.settings.heartbeat_file):
            return 0
        for cleanup in (worker.unsubscribe, worker.register_death):  # what its teardown may have missed
            try:
                cleanup()
            except RedisError:
                pass
        worker = type(worker)(worker.queues, rt=worker.runtime, connection=worker.connection)
        worker.runtime.resume()


def wait_for_redis(connection: Redis, heartbeat_file: Path | None = None, max_wait: float = 5.0) -> bool:
    """Ping with backoff until Redis answers (True) or SIGTERM/SIGINT arrives (False); the
    liveness file is kept fresh meanwhile (waiting for Redis is not a reason to restart)."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        delay = 0.5
        while not stop.is_set():
            with contextlib.suppress(OSError):
                liveness.touch(heartbeat_file)
            try:
                connection.ping()
                return True
            except RedisError:
                stop.wait(delay)
                delay = min(2 * delay, max_wait)
        return False
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
