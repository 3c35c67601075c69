"""Request ids in and out, request counters and the access log, as one plain ASGI middleware (cheap)."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import logs
from service.errors import PROBLEM_JSON, PROBLEM_TYPE
from service.metrics import ServiceMetrics

REQUEST_ID_HEADER = b"x-request-id"
_VALID_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's X-Request-ID when it is a sane token, else a fresh one."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            text = value.decode("latin-1")
            if _VALID_ID.fullmatch(text):
                return text
    return uuid.uuid4().hex


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, access_log: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope["headers"])
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        token = logs.request_id_var.set(request_id)
        start = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER]
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                present = {k.lower() for k, _ in headers}
                for name, value in state.get("rate_headers", {}).items():  # set by get_principal
                    if name.lower().encode() not in present:
                        headers.append((name.lower().encode(), value.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds, route = time.perf_counter() - start, _route_of(scope)
            self.metrics.observe_request(scope["method"], route, status, seconds)
            if self.access_log:
                logs.access(scope["method"], route, status, seconds, state.get("principal"))
            logs.request_id_var.reset(token)


class BodyLimit:
    """413 before parsing when Content-Length already says the body is too big."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                await _too_large(scope, send, int(length), self.max_bytes)
                return
        await self.app(scope, receive, send)


async def _too_large(scope: Scope, send: Send, length: int, limit: int) -> None:
    body = {
        "type": PROBLEM_TYPE + "payload-too-large",
        "title": "Payload too large",
        "status": 413,
        "detail": f"the request body is {length} bytes; the limit is {limit}",
        "instance": scope["path"],
        "request_id": scope.get("state", {}).get("request_id"),
    }
    payload = json.dumps(body).encode()
    headers = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _route_of(scope: dict[str, Any]) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "(unmatched)"
