"""`lrpseg worker`: run one RQ worker against REDIS_URL."""

from __future__ import annotations

import argparse
import logging
import sys

from service.settings import Settings
from workers.worker import build_worker


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
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    worker = build_worker(settings)
    worker.work(burst=args.burst, max_jobs=args.max_jobs, logging_level=settings.log_level.upper())
    return 0
