"""Request ids in and out, request counters and the access log, as one plain ASGI middleware (cheap)."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import MutableMapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import logs
from service.errors import PROBLEM_JSON, PROBLEM_TYPE
from service.prometheus import ServiceMetrics

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


class BodyTooLarge(Exception):
    """Raised from `receive` once a body without (or beyond) its Content-Length passes the limit."""


class BodyLimit:
    """413 before parsing when Content-Length already says the body is too big, and 413 as soon
    as the bytes received pass the limit (chunked uploads declare no length): `receive` counts
    them and raises `BodyTooLarge`; whatever the app answers after that (FastAPI turns a failed
    body read into a 400) is replaced by the 413, unless the response has already started.
    A body that stalls (no bytes for `timeout` s, e.g. shorter than its Content-Length) gets 408
    the same way, so it cannot hold a connection and a worker thread forever (issue 15)."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _too_large(scope, send, f"the request body is {int(length)} bytes; the limit is {self.max_bytes}")
            return
        received, exceeded, started = 0, False, False
        body_done, stalled = False, False

        async def counting_receive() -> Message:
            nonlocal received, exceeded, body_done, stalled
            if exceeded:
                raise BodyTooLarge
            if body_done:  # e.g. waiting for a disconnect while streaming: no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except TimeoutError:
                exceeded = stalled = True
                raise BodyTooLarge from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # the app's answer to the cut-off body; the 413 goes out below instead
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            if started:
                raise
        if exceeded and not started:
            if stalled:
                detail = f"the request body stalled: no bytes for {self.timeout:g} s"
                await _too_large(scope, send, detail, 408, "request-timeout", "Request timeout")
            else:
                await _too_large(scope, send, f"the request body is over the limit of {self.max_bytes} bytes")


async def _too_large(
    scope: Scope,
    send: Send,
    detail: str,
    status: int = 413,
    code: str = "payload-too-large",
    title: str = "Payload too large",
) -> None:
    body = {
        "type": PROBLEM_TYPE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": scope["path"],
        "request_id": scope.get("state", {}).get("request_id"),
    }
    payload = json.dumps(body).encode()
    headers = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _route_of(scope: MutableMapping[str, Any]) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "(unmatched)"
