"""`lrpseg worker`: run one RQ worker against REDIS_URL."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from redis import Redis
from redis.exceptions import RedisError

from core import logs
from core.settings import Settings
from workers.worker import ModelWorker, build_worker

log = logging.getLogger("lrpseg.worker")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", help="Redis to use (default: REDIS_URL)")
    parser.add_argument("--queue", help="queue name (default: LRPSEG_QUEUE_NAME or lrpseg)")
    parser.add_argument("--name", help="worker name (default: host.pid)")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: LRPSEG_DEVICE or auto)")
    parser.add_argument("--threads", type=int, help="torch threads (default: LRPSEG_TORCH_THREADS or torch's)")
    parser.add_argument("--burst", action="store_true", help="run the queued jobs, then exit")
    parser.add_argument("--max-jobs", type=int, help="exit after this many jobs")


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
    if not settings.redis_url:
        print(
            "lrpseg worker: set REDIS_URL (or run `lrpseg serve`, which embeds Redis)",
            file=sys.stderr,
        )
        return 2
    logs.configure(settings.log_level, settings.log_format)
    worker = build_worker(settings)
    return work_until_stopped(worker, burst=args.burst, max_jobs=args.max_jobs, logging_level=settings.log_level)


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
        if not wait_for_redis(worker.connection):
            return 0
        for cleanup in (worker.unsubscribe, worker.register_death):  # what its teardown may have missed
            try:
                cleanup()
            except RedisError:
                pass
        worker = ModelWorker(worker.queues, rt=worker.runtime, connection=worker.connection)
        worker.runtime.resume()


def wait_for_redis(connection: Redis, max_wait: float = 5.0) -> bool:
    """Ping with backoff until Redis answers (True) or SIGTERM/SIGINT arrives (False)."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        delay = 0.5
        while not stop.is_set():
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
