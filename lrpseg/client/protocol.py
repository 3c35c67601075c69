"""What the sync and async clients share: building requests and reading answers (no I/O here)."""

from __future__ import annotations

import io
import json
import mimetypes
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from lrpseg.client.errors import ClientError, JobFailed, ProblemError, ServerNotRunning
from lrpseg.client.results import Result, Submitted

DEFAULT_URL = "http://127.0.0.1:8000"
ENDED = ("finished", "failed", "canceled")
ARRAYS = {"relevance.npy": "relevance", "segmentation.npy": "segmentation"}

# an image: a file path, its bytes, or an array (sent as .npy: (H, W), (C, H, W) or (H, W, C))
ImageLike = str | Path | bytes | np.ndarray


def headers(api_key: str | None) -> dict[str, str]:
    return {"X-API-Key": api_key} if api_key else {}


def image_part(image: ImageLike, filename: str | None = None) -> tuple[str, bytes, str]:
    """(file name, bytes, media type) of one multipart file part."""
    if isinstance(image, np.ndarray):
        buffer = io.BytesIO()
        np.save(buffer, image, allow_pickle=False)
        return filename or "image.npy", buffer.getvalue(), "application/octet-stream"
    if isinstance(image, bytes):
        return filename or "image", image, "application/octet-stream"
    path = Path(image)
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return filename or path.name, path.read_bytes(), media


def params_text(params: dict[str, Any] | str | None) -> str:
    if params is None:
        return "{}"
    return params if isinstance(params, str) else json.dumps(params)


def new_idempotency_key() -> str:
    """One per submission, so a retried POST (after a timeout or 503) cannot queue the job twice."""
    return "client-" + uuid.uuid4().hex


def not_running(exc: httpx.TransportError, base_url: str) -> ServerNotRunning | None:
    """A connection that never opened: the server is not there."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        reason = "connection refused" if "refused" in str(exc).lower() or not str(exc) else str(exc)
        return ServerNotRunning(base_url, reason)
    return None


def problem(response: httpx.Response) -> ProblemError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"title": response.reason_phrase or f"HTTP {response.status_code}", "detail": response.text[:200]}
    return ProblemError(response.status_code, body)


def body(response: httpx.Response) -> dict[str, Any]:
    """The response's JSON object (anything else is not an lrpseg answer)."""
    try:
        value = response.json()
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ClientError(f"{response.request.url} answered {response.status_code} without a JSON object")
    return value


def job_id_of(job: str | Submitted | dict[str, Any]) -> str:
    if isinstance(job, Submitted):
        return job.job_id
    if isinstance(job, dict):
        return str(job["job_id"])
    return job


def submitted(response: httpx.Response) -> Submitted:
    body = response.json()
    return Submitted(body["job_id"], response.headers.get("Location") or body["links"]["self"])


def batch_submitted(response: httpx.Response) -> list[Submitted]:
    return [Submitted(i["job_id"], i["links"]["self"], i["name"]) for i in response.json()["items"]]


def check_ended(view: dict[str, Any]) -> dict[str, Any]:
    """The view of a finished job; JobFailed for a failed or canceled one."""
    if view["status"] != "finished":
        raise JobFailed(view["job_id"], view["status"], view.get("error"))
    return view


def result_of(view: dict[str, Any], arrays: dict[str, bytes]) -> Result:
    loaded = {ARRAYS[name]: np.load(io.BytesIO(data), allow_pickle=False) for name, data in arrays.items()}
    return Result(
        job_id=view["job_id"],
        model=view.get("model") or view["result"]["model"]["id"],
        result=view["result"],
        artifacts=dict(view["links"].get("artifacts") or {}),
        **loaded,
    )


def array_links(view: dict[str, Any]) -> dict[str, str]:
    links = view["links"].get("artifacts") or {}
    return {name: url for name, url in links.items() if name in ARRAYS}
