"""Logging for `lrpseg serve`, `lrpseg api` and `lrpseg worker`: one JSON object per line.

Every line carries `time`, `level`, `logger`, `message`, and `request_id` / `job_id` where
known: the API sets them per request (`RequestContext`), a worker per job (read from RQ's
current job, so RQ's own lines carry them too). Our code logs ids, codes and counts only,
never image bytes, DICOM attributes, headers, bodies or keys (tests/service/test_logs.py
checks a whole job's logs for that); the access line names the route template, not the URL.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

from core.meta import REQUEST_ID

request_id_var: ContextVar[str | None] = ContextVar("lrpseg_request_id", default=None)
job_id_var: ContextVar[str | None] = ContextVar("lrpseg_job_id", default=None)

ACCESS = logging.getLogger("lrpseg.access")
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id", "job_id"}
_MARK = "_lrpseg_handler"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [req=%(request_id)s job=%(job_id)s] %(message)s"


class ContextFilter(logging.Filter):
    """Stamp each record with the current request id and job id (None when there is none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id, job_id = request_id_var.get(), job_id_var.get()
        if job_id is None:
            job_id, job_request = _current_rq_job()
            request_id = request_id or job_request
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id
        if getattr(record, "job_id", None) is None:
            record.job_id = job_id
        return True


@contextmanager
def job_context(job_id: str, request_id: str | None) -> Iterator[None]:
    """Stamp the log lines of this job's run (a worker's `perform_job`) with its ids."""
    tokens = job_id_var.set(job_id), request_id_var.set(request_id if isinstance(request_id, str) else None)
    try:
        yield
    finally:
        job_id_var.reset(tokens[0])
        request_id_var.reset(tokens[1])


def _current_rq_job() -> tuple[str | None, str | None]:
    """The job a worker is running in this thread (RQ keeps a per-thread stack), if any."""
    try:
        from rq import get_current_job

        job = get_current_job()
    except Exception:
        return None, None
    if job is None:
        return None, None
    meta = job.meta if isinstance(job.meta, dict) else {}
    request_id = meta.get(REQUEST_ID)
    return job.id, request_id if isinstance(request_id, str) else None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
            "job_id": getattr(record, "job_id", None),
        }
        for key, value in record.__dict__.items():  # `extra=` fields of our own calls
            if key not in _STANDARD and not key.startswith("_") and isinstance(value, str | int | float | bool):
                out[key] = value
        if record.exc_info:
            out["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def configure(level: str = "info", fmt: str = "json", stream: IO[str] | None = None) -> logging.Handler:
    """Route every logger (ours, uvicorn's, RQ's) through one handler on the root logger."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    setattr(handler, _MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn and RQ install their own handlers unless one is already there; send theirs to ours.
    for name in ("uvicorn", "uvicorn.error", "rq.worker", "rq.job"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # uvicorn's access line has the full URL, query string included: ours (`access`) replaces it.
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.handlers.clear()
    uvicorn_access.propagate = False
    # httpx/httpcore log every request's full URL, query string included, at INFO/DEBUG
    # (callbacks, the client): a URL may carry a token. httpx2/httpcore2 are their successors,
    # which starlette's TestClient prefers when installed (huggingface_hub brings them in).
    for name in ("httpx", "httpcore", "httpx2", "httpcore2"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    return handler


def access(method: str, route: str, status: int, seconds: float, principal: str | None) -> None:
    """One line per request. The route template (`/v1/jobs/{job_id}`), never the query string."""
    if ACCESS.isEnabledFor(logging.INFO):
        ACCESS.info(
            "%s %s %d",
            method,
            route,
            status,
            extra={
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "principal": principal or "-",
            },
        )
