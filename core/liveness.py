"""The worker's liveness file: touched on every heartbeat, read by `lrpseg worker --check`.

A container's liveness probe (Kubernetes exec probe, compose healthcheck) runs the check in a
fresh process; it only reads the file's age, so it needs neither Redis (a Redis outage must not
restart healthy workers) nor torch (the probe stays cheap).
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def touch(path: Path | None) -> None:
    """Mark the worker alive now (time and pid are also written, for people reading the file)."""
    if path is None:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(f"{time.time():.3f} {os.getpid()}\n")
    tmp.replace(path)  # atomic: a probe never reads a half-written file


def check(path: Path, max_age: float) -> str | None:
    """None when the file was touched within `max_age` seconds, else why the worker is not alive."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return f"{path} does not exist (the worker has not finished starting, or never ran here)"
    if age > max_age:
        return f"{path} is {age:.0f} s old (limit {max_age:.0f} s): the worker stopped beating"
    return None
