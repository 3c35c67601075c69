"""What can go wrong talking to an lrpseg service, as exception types a caller can catch."""

from __future__ import annotations

from typing import Any


class ClientError(RuntimeError):
    """Any failure of lrpseg.client (the base of the others)."""


class ServerNotRunning(ClientError):
    """Nothing answers at the URL (connection refused, unknown host)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{reason} — is `make serve` (or `lrpseg serve`) running at {url}?")
        self.url = url


class ProblemError(ClientError):
    """The service refused a request: its status and RFC 9457 problem body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.title = str(problem.get("title") or f"HTTP {status}")
        self.detail = problem.get("detail")
        self.type = problem.get("type")
        self.request_id = problem.get("request_id")
        self.errors: list[dict[str, Any]] = list(problem.get("errors") or [])
        text = f"HTTP {status} {self.title}" + (f": {self.detail}" if self.detail else "")
        super().__init__(text + (f" (request id {self.request_id})" if self.request_id else ""))


class RetriesExhausted(ProblemError):
    """Still 429/503 after every retry the policy allowed."""


class JobFailed(ClientError):
    """The job ended without a result (failed or canceled)."""

    def __init__(self, job_id: str, status: str, error: dict[str, Any] | None) -> None:
        error = error or {}
        self.job_id, self.status = job_id, status
        self.code, self.detail = error.get("code"), error.get("detail")
        super().__init__(f"job {job_id} {status}: {self.code}: {self.detail}")


class WaitTimeout(ClientError):
    """The job did not end within the time the caller gave it."""

    def __init__(self, job_id: str, status: str, seconds: float) -> None:
        super().__init__(f"gave up after {seconds:g} s; job {job_id} is still {status}")
        self.job_id, self.status = job_id, status
