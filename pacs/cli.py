"""`lrpseg dimse`: run the C-STORE SCP until SIGINT/SIGTERM (settings from the LRPSEG_ environment)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from redis import Redis

from core.connect import connect
from core.logs import configure as configure_logs
from core.settings import get_settings
from pacs.intake import SeriesIntake
from pacs.receive import Receiver
from pacs.scp import start

log = logging.getLogger("lrpseg.dimse")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=None, help="listen port (default LRPSEG_DIMSE_PORT)")


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    configure_logs(settings.log_level, settings.log_format)
    if not settings.redis_configured:
        print("lrpseg dimse: set REDIS_URL (the Redis the API and workers use)", file=sys.stderr)
        return 2
    connection = connect(settings, socket_timeout=settings.redis_timeout)
    keys = Redis.from_url(settings.key_redis_url) if settings.key_redis_url else None
    try:
        server = start(settings, Receiver(SeriesIntake(connection, settings, keys)), args.port)
    except ValueError as exc:
        print(f"lrpseg dimse: {exc}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    log.info("C-STORE SCP %s listening on %s:%s", settings.dimse_ae_title, host, port)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stop.wait()
    server.shutdown()
    return 0
