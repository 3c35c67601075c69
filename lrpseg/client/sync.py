"""`Client`: the blocking client (one httpx.Client, reused connections)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

from lrpseg.client import protocol as p
from lrpseg.client.backoff import RETRY_STATUSES, Backoff, retry_after_seconds
from lrpseg.client.errors import RetriesExhausted, WaitTimeout
from lrpseg.client.results import Result, Submitted

Progress = Callable[[dict[str, Any]], None]


class Client:
    """Submit images to an lrpseg service, wait for their jobs, fetch results.

    >>> with Client("http://127.0.0.1:8000") as client:
    ...     result = client.explain("part.png", {"masks": ["gmm"]})
    ...     result.relevance.shape, result.result["explanation"]["conservation"]

    A refused submission (429 too many, 503 queue full) is retried after the server's
    Retry-After (`backoff.retries` times); each submission carries an Idempotency-Key, so a
    retry never queues a job twice.
    """

    def __init__(
        self,
        url: str = p.DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        backoff: Backoff | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.backoff = backoff or Backoff()
        self.http = httpx.Client(base_url=self.url, headers=p.headers(api_key), timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # ---- requests ---------------------------------------------------------------------

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request, retried on 429/503 as `backoff` says; ProblemError on any other 4xx/5xx."""
        for attempt in range(self.backoff.retries + 1):
            try:
                response = self.http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                raise (p.not_running(exc, self.url) or exc) from exc
            if response.status_code not in RETRY_STATUSES or attempt == self.backoff.retries:
                break
            time.sleep(self.backoff.refusal_delay(attempt, retry_after_seconds(response.headers.get("Retry-After"))))
        if response.status_code in RETRY_STATUSES:
            error = p.problem(response)
            raise RetriesExhausted(error.status, error.problem)
        if response.status_code >= 400:
            raise p.problem(response)
        return response

    def ready(self) -> dict[str, Any]:
        """/readyz: whether Redis, a worker and the models are there (ProblemError-free: the body)."""
        try:
            return p.body(self.http.get("/readyz"))
        except httpx.TransportError as exc:
            raise (p.not_running(exc, self.url) or exc) from exc

    def models(self) -> dict[str, Any]:
        return p.body(self.request("GET", "/v1/models"))

    def submit(
        self,
        image: p.ImageLike,
        params: dict[str, Any] | str | None = None,
        *,
        ground_truth: p.ImageLike | None = None,
        filename: str | None = None,
        idempotency_key: str | None = None,
    ) -> Submitted:
        files = {"image": p.image_part(image, filename)}
        if ground_truth is not None:
            files["ground_truth"] = p.image_part(ground_truth)
        key = idempotency_key or p.new_idempotency_key()
        response = self.request(
            "POST", "/v1/jobs", files=files, data={"params": p.params_text(params)}, headers={"Idempotency-Key": key}
        )
        return p.submitted(response)

    def submit_batch(
        self, images: Iterable[p.ImageLike], params: dict[str, Any] | str | None = None
    ) -> list[Submitted]:
        """Many images as one POST /v1/batches: all are checked first, then all are queued (or none)."""
        files = [("images", p.image_part(image)) for image in images]
        response = self.request("POST", "/v1/batches", files=files, data={"params": p.params_text(params)})
        return p.batch_submitted(response)

    def status(self, job: str | Submitted) -> dict[str, Any]:
        return p.body(self.request("GET", f"/v1/jobs/{p.job_id_of(job)}"))

    def wait(self, job: str | Submitted, timeout: float = 600.0, on_progress: Progress | None = None) -> dict[str, Any]:
        """Poll until the job ends (with backoff); its finished view, or JobFailed / WaitTimeout."""
        job_id = p.job_id_of(job)
        deadline = time.monotonic() + timeout
        for poll in range(1 << 30):
            response = self.request("GET", f"/v1/jobs/{job_id}")
            view = p.body(response)
            if on_progress is not None:
                on_progress(view)
            if view["status"] in p.ENDED:
                return p.check_ended(view)
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(job_id, view["status"], timeout)
            hint = retry_after_seconds(response.headers.get("Retry-After"))
            time.sleep(min(left, self.backoff.poll_delay(poll, hint)))
        raise AssertionError("unreachable")

    def result(self, job: str | Submitted | dict[str, Any]) -> Result:
        """A finished job's result with relevance.npy and segmentation.npy loaded as arrays."""
        view = p.check_ended(job if isinstance(job, dict) else self.status(job))
        arrays = {name: self.request("GET", url).content for name, url in p.array_links(view).items()}
        return p.result_of(view, arrays)

    def explain(
        self,
        image: p.ImageLike,
        params: dict[str, Any] | str | None = None,
        *,
        ground_truth: p.ImageLike | None = None,
        timeout: float = 600.0,
        on_progress: Progress | None = None,
    ) -> Result:
        """Submit, wait, fetch: the finished job's Result."""
        job = self.submit(image, params, ground_truth=ground_truth)
        return self.result(self.wait(job, timeout, on_progress))

    def download(
        self, job: str | Submitted | dict[str, Any], out: Path, names: Iterable[str] | None = None
    ) -> list[Path]:
        """Save a finished job's artifacts (all, or `names`) into the folder `out`."""
        view = p.check_ended(job if isinstance(job, dict) else self.status(job))
        links = view["links"].get("artifacts") or {}
        wanted = set(links) if names is None else set(names)
        out.mkdir(parents=True, exist_ok=True)
        saved = []
        for name, url in links.items():
            if name in wanted:
                path = out / name
                path.write_bytes(self.request("GET", url).content)
                saved.append(path)
        return saved

    def delete(self, job: str | Submitted) -> None:
        self.request("DELETE", f"/v1/jobs/{p.job_id_of(job)}")
