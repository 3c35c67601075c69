"""`AsyncClient`: the asyncio twin of `Client` (same methods, awaited), plus `explain_many`."""

from __future__ import annotations

import asyncio
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


class AsyncClient:
    """`Client` for asyncio code: `async with AsyncClient(url) as c: r = await c.explain(...)`."""

    def __init__(
        self,
        url: str = p.DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        backoff: Backoff | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.backoff = backoff or Backoff()
        self.http = httpx.AsyncClient(
            base_url=self.url, headers=p.headers(api_key), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request, retried on 429/503 as `backoff` says; ProblemError on any other 4xx/5xx."""
        for attempt in range(self.backoff.retries + 1):
            try:
                response = await self.http.request(method, url, **kwargs)
            except httpx.TransportError as exc:
                raise (p.not_running(exc, self.url) or exc) from exc
            if response.status_code not in RETRY_STATUSES or attempt == self.backoff.retries:
                break
            hint = retry_after_seconds(response.headers.get("Retry-After"))
            await asyncio.sleep(self.backoff.refusal_delay(attempt, hint))
        if response.status_code in RETRY_STATUSES:
            error = p.problem(response)
            raise RetriesExhausted(error.status, error.problem)
        if response.status_code >= 400:
            raise p.problem(response)
        return response

    async def ready(self) -> dict[str, Any]:
        try:
            return p.body(await self.http.get("/readyz"))
        except httpx.TransportError as exc:
            raise (p.not_running(exc, self.url) or exc) from exc

    async def models(self) -> dict[str, Any]:
        return p.body(await self.request("GET", "/v1/models"))

    async def submit(
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
        response = await self.request(
            "POST", "/v1/jobs", files=files, data={"params": p.params_text(params)}, headers={"Idempotency-Key": key}
        )
        return p.submitted(response)

    async def submit_batch(
        self, images: Iterable[p.ImageLike], params: dict[str, Any] | str | None = None
    ) -> list[Submitted]:
        files = [("images", p.image_part(image)) for image in images]
        response = await self.request("POST", "/v1/batches", files=files, data={"params": p.params_text(params)})
        return p.batch_submitted(response)

    async def status(self, job: str | Submitted) -> dict[str, Any]:
        return p.body(await self.request("GET", f"/v1/jobs/{p.job_id_of(job)}"))

    async def wait(
        self, job: str | Submitted, timeout: float = 600.0, on_progress: Progress | None = None
    ) -> dict[str, Any]:
        job_id = p.job_id_of(job)
        deadline = time.monotonic() + timeout
        for poll in range(1 << 30):
            response = await self.request("GET", f"/v1/jobs/{job_id}")
            view = p.body(response)
            if on_progress is not None:
                on_progress(view)
            if view["status"] in p.ENDED:
                return p.check_ended(view)
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(job_id, view["status"], timeout)
            hint = retry_after_seconds(response.headers.get("Retry-After"))
            await asyncio.sleep(min(left, self.backoff.poll_delay(poll, hint)))
        raise AssertionError("unreachable")

    async def result(self, job: str | Submitted | dict[str, Any]) -> Result:
        view = p.check_ended(job if isinstance(job, dict) else await self.status(job))
        arrays = {name: (await self.request("GET", url)).content for name, url in p.array_links(view).items()}
        return p.result_of(view, arrays)

    async def explain(
        self,
        image: p.ImageLike,
        params: dict[str, Any] | str | None = None,
        *,
        ground_truth: p.ImageLike | None = None,
        timeout: float = 600.0,
        on_progress: Progress | None = None,
    ) -> Result:
        job = await self.submit(image, params, ground_truth=ground_truth)
        return await self.result(await self.wait(job, timeout, on_progress))

    async def explain_many(
        self,
        images: Iterable[p.ImageLike],
        params: dict[str, Any] | str | None = None,
        *,
        concurrency: int = 4,
        timeout: float = 600.0,
    ) -> list[Result]:
        """Explain every image, at most `concurrency` jobs in flight; results in input order."""
        gate = asyncio.Semaphore(concurrency)

        async def one(image: p.ImageLike) -> Result:
            async with gate:
                return await self.explain(image, params, timeout=timeout)

        return list(await asyncio.gather(*(one(image) for image in images)))

    async def download(
        self, job: str | Submitted | dict[str, Any], out: Path, names: Iterable[str] | None = None
    ) -> list[Path]:
        view = p.check_ended(job if isinstance(job, dict) else await self.status(job))
        links = view["links"].get("artifacts") or {}
        wanted = set(links) if names is None else set(names)
        out.mkdir(parents=True, exist_ok=True)
        saved = []
        for name, url in links.items():
            if name in wanted:
                path = out / name
                path.write_bytes((await self.request("GET", url)).content)
                saved.append(path)
        return saved

    async def delete(self, job: str | Submitted) -> None:
        await self.request("DELETE", f"/v1/jobs/{p.job_id_of(job)}")
