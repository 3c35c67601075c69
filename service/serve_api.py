"""`lrpseg api`: only the HTTP API, against REDIS_URL (workers run elsewhere)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import uvicorn
from fastapi import FastAPI

from core import logs
from core.settings import Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="bind address (default: LRPSEG_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: LRPSEG_PORT or 8000)")
    parser.add_argument("--redis-url", help="Redis to use (default: REDIS_URL)")
    parser.add_argument("--processes", type=int, default=1, help="uvicorn worker processes")


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = {"host": args.host, "port": args.port, "redis_url": args.redis_url}
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What every uvicorn.run of ours passes: our access log (route templates, not URLs) and
    uvicorn's loggers through logs.configure's handler."""
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": False,
        "log_config": None,
    }


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    logs.configure(settings.log_level, settings.log_format)
    if not settings.redis_configured:
        print(
            "lrpseg api: set REDIS_URL or LRPSEG_REDIS_SENTINELS (or run `lrpseg serve`, which embeds Redis)",
            file=sys.stderr,
        )
        return 2
    if args.processes > 1:
        # Several processes need an import string; they read the settings from the environment.
        if settings.redis_url:  # Sentinel settings come from the environment already
            os.environ.update({"LRPSEG_REDIS_URL": settings.redis_url})
        uvicorn.run("service.serve_api:process_app", factory=True, workers=args.processes, **uvicorn_options(settings))
        return 0
    from service.app import create_app

    uvicorn.run(create_app(settings), **uvicorn_options(settings))
    return 0


def process_app() -> FastAPI:
    """The app of one of uvicorn's worker processes (`--processes N`): each is a fresh
    interpreter, so it sets up our logging before building the app from the environment."""
    from service.app import create_app

    settings = Settings()
    logs.configure(settings.log_level, settings.log_format)
    return create_app(settings)
