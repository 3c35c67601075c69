"""RFC 9457 problem+json for every error, each with the request id.

Bad input of any kind (multipart fields, the params JSON, the image itself) ends here as a
4xx naming what is wrong; only our own bugs become a 500, and those say nothing about the
request's content.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from schemas.problems import FieldError, Problem

log = logging.getLogger("lrpseg.service")

PROBLEM_TYPE = "https://lrpseg.dev/problems/"
PROBLEM_JSON = "application/problem+json"


class ApiError(Exception):
    """An error with an HTTP status, raised anywhere below a route."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        errors: list[FieldError] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status, self.title, self.detail = status, title, detail
        # the problem `type` is PROBLEM_TYPE + code, always kebab-case (the decoders' codes are snake_case)
        self.code = (code or title.lower().replace(" ", "-")).replace("_", "-")
        self.headers = headers or {}
        self.errors = errors


def retry_later(status: int, title: str, detail: str, code: str, retry_after: int) -> ApiError:
    """A refusal the caller should repeat later (429, 503, 409 not ready), with `Retry-After` seconds."""
    return ApiError(status, title, detail, code=code, headers={"Retry-After": str(retry_after)})


def field_errors(errors: Iterable[Any], prefix: Sequence[str | int] = ()) -> list[FieldError]:
    """Pydantic error dicts -> FieldError with dotted paths ('params.target.cls')."""
    out = []
    for err in errors:
        loc = [*prefix, *[p for p in err.get("loc", ()) if p not in ("body",)]]
        out.append(FieldError(field=".".join(str(p) for p in loc) or "(body)", message=str(err.get("msg", ""))))
    return out


def params_error(exc: ValidationError, prefix: str = "params") -> ApiError:
    errors = field_errors(exc.errors(include_url=False, include_input=False), (prefix,))
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
    return ApiError(422, "Invalid parameters", detail, code="invalid-params", errors=errors)


def problem_response(request: Request, error: ApiError) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    body = Problem(
        type=PROBLEM_TYPE + error.code,
        title=error.title,
        status=error.status,
        detail=error.detail,
        instance=request.url.path,
        request_id=request_id,
        errors=error.errors,
    )
    headers = dict(error.headers)
    if request_id:
        headers["X-Request-ID"] = request_id
    content = body.model_dump(exclude_none=True)
    if request.url.path.startswith("/v2/"):  # the Open Inference Protocol's clients read `error`
        content["error"] = f"{error.title}: {error.detail}" if error.detail else error.title
    return JSONResponse(content, status_code=error.status, headers=headers, media_type=PROBLEM_JSON)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return problem_response(request, exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = field_errors(exc.errors())
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
    return problem_response(request, ApiError(422, "Invalid request", detail, code="invalid-request", errors=errors))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    titles = {404: "Not found", 405: "Method not allowed", 413: "Payload too large"}
    title = titles.get(exc.status_code, "HTTP error")
    headers = dict(exc.headers or {})
    return problem_response(request, ApiError(exc.status_code, title, str(exc.detail), headers=headers))


async def _redis_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """Redis down or too slow: the request may be retried; redis-py reconnects on its own."""
    log.warning("Redis unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    retry_after = getattr(getattr(request.app.state, "settings", None), "retry_after", 1)
    error = retry_later(
        503,
        "Service unavailable",
        "the job store (Redis) is not reachable; try again shortly",
        "store-unavailable",
        max(1, retry_after),
    )
    return problem_response(request, error)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Log the type and where, never the request's content.
    log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=exc)
    return problem_response(request, ApiError(500, "Internal error", "the server failed; quote the request id"))


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for redis_error in (RedisConnectionError, RedisTimeoutError):
        app.add_exception_handler(redis_error, _redis_unavailable)
    app.add_exception_handler(Exception, _unexpected)
