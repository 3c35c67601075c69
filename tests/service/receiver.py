"""A real HTTP callback receiver for the tests: http.server in a thread on 127.0.0.1, free port.

It answers each POST with the next status of a script (the last one repeats), or sleeps past
the sender's timeout first, and records every request: arrival time, headers, raw body.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    at: float  # time.monotonic() on arrival
    headers: dict[str, str]
    body: bytes
    probe: Any = None  # what the receiver's probe saw on arrival (e.g. the job's status)


@dataclass
class Receiver:
    statuses: list[int]
    delay: float = 0.0  # seconds to sleep before answering (longer than the timeout: never answers)
    probe: Callable[[bytes], Any] | None = None  # called with the body on arrival, like a receiver's GET
    requests: list[Received] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _arrived: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self._arrived = threading.Condition(self._lock)

    def record(self, headers: dict[str, str], body: bytes) -> int:
        seen = self.probe(body) if self.probe is not None else None
        with self._arrived:
            self.requests.append(Received(time.monotonic(), headers, body, seen))
            status = self.statuses[min(len(self.requests), len(self.statuses)) - 1]
            self._arrived.notify_all()
        return status

    def wait_for(self, count: int, timeout: float) -> list[Received]:
        """Block until `count` requests arrived (or `timeout` s); the requests so far."""
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.requests) >= count, timeout=timeout)
            return list(self.requests)


@contextmanager
def running_receiver(
    statuses: list[int], delay: float = 0.0, probe: Callable[[bytes], Any] | None = None
) -> Iterator[Receiver]:
    receiver = Receiver(statuses, delay, probe)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            status = receiver.record({k.lower(): v for k, v in self.headers.items()}, body)
            if receiver.delay:
                time.sleep(receiver.delay)
            try:
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:
                pass  # the sender gave up (timeout) and closed the connection

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/lrpseg?token=abc"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
