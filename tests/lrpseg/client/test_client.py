"""lrpseg.client against a real running service: results, batches, downloads, refusals, errors."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from lrpseg.client import (
    AsyncClient,
    Backoff,
    Client,
    JobFailed,
    ProblemError,
    RetriesExhausted,
    ServerNotRunning,
    WaitTimeout,
)
from lrpseg.registry import Registry
from service.app import create_app
from tests.service import factories
from tests.service.live import live_settings, start_server

pytestmark = pytest.mark.slow
FAST = Backoff(retries=3, base=0.05, cap=0.2, poll_first=0.05, poll_cap=0.3)


class Recording(httpx.HTTPTransport):
    """The real transport, noting each request's method, path and answer."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, int, str | None]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.seen.append((request.method, request.url.path, response.status_code, response.headers.get("Retry-After")))
        return response


def test_explain_returns_typed_arrays_equal_to_the_artifacts(url: str, tmp_path: Path) -> None:
    image, truth = factories.defect_image(64)
    with Client(url, backoff=FAST) as client:
        seen: list[str] = []
        result = client.explain(
            image,
            {"masks": ["gmm"]},
            ground_truth=truth.astype(np.uint8) * 255,
            on_progress=lambda v: seen.append(v["status"]),
        )
        assert seen[-1] == "finished"
        assert result.relevance is not None and result.relevance.shape == (1, 64, 64)
        assert result.segmentation is not None and result.segmentation.shape == (64, 64)
        assert result.model == factories.SEGMENTER and list(result.masks) == ["gmm"]
        assert result.explanation is not None and result.result["ground_truth"]["positive_pixels"] == int(truth.sum())
        saved = client.download(result.job_id, tmp_path / "out")
        assert {p.name for p in saved} == set(result.artifacts)
        np.testing.assert_array_equal(np.load(tmp_path / "out" / "relevance.npy"), result.relevance)
        shares = {c["index"]: c["pixels"] for c in result.result["segmentation"]["classes"]}
        assert {i: int((result.segmentation == i).sum()) for i in shares} == shares


def test_a_batch_and_the_async_twin_agree(url: str, tmp_path: Path) -> None:
    images = [factories.defect_image(64, seed)[0] for seed in (3, 4)]
    paths = []
    for n, image in enumerate(images):
        paths.append(tmp_path / f"part-{n}.png")
        paths[-1].write_bytes(factories.png_bytes(image))
    with Client(url, backoff=FAST) as client:
        jobs = client.submit_batch(paths, {"masks": []})
        assert [j.name for j in jobs] == ["part-0.png", "part-1.png"]
        batch = [client.result(client.wait(job)) for job in jobs]

    async def both() -> list:
        async with AsyncClient(url, backoff=FAST) as client:
            return await client.explain_many(paths, {"masks": []}, concurrency=2)

    for one, other in zip(batch, asyncio.run(both())):
        np.testing.assert_array_equal(one.relevance, other.relevance)
        assert one.job_id != other.job_id


def test_bad_params_are_problems_naming_the_field(url: str) -> None:
    with Client(url, backoff=FAST) as client, pytest.raises(ProblemError) as caught:
        client.submit(factories.png_bytes(factories.defect_image(32)[0]), {"target": {"cls": "nope"}})
    assert caught.value.status == 422 and caught.value.errors[0]["field"] == "params.target.cls"
    assert "nope" in str(caught.value) and caught.value.request_id


def test_a_failed_job_and_a_short_wait_raise(url: str) -> None:
    with Client(url, backoff=FAST) as client:
        job = client.submit(factories.png_bytes(factories.defect_image(64)[0]))
        with pytest.raises(WaitTimeout):
            client.wait(job, timeout=0.01)
        client.wait(job)
        with pytest.raises(ProblemError) as caught:
            client.status("0" * 32)
        assert caught.value.status == 404
    view = {"job_id": "x", "status": "failed", "error": {"code": "bad_input", "detail": "why"}}
    with pytest.raises(JobFailed, match="bad_input: why"):
        Client(url).result(view)


def test_429_is_retried_after_retry_after(redis_conn: redis.Redis, registry: Registry, url: str) -> None:
    """Another front end on the same queue and worker, allowing 1 request/s per key."""
    limited, stop = start_server(
        create_app(live_settings(rate_limit=1, rate_burst=1), registry=registry, connection=redis_conn)
    )
    transport = Recording()
    try:
        with Client(limited, backoff=Backoff(retries=10, poll_first=0.05), transport=transport) as client:
            result = client.explain(factories.png_bytes(factories.defect_image(64)[0]), {"masks": []})
    finally:
        stop()
    refused = [s for s in transport.seen if s[2] == 429]
    assert refused and all(s[3] is not None for s in refused)  # the server said when
    assert result.relevance is not None  # and the client got there anyway


def test_503_queue_full_gives_up_after_the_retries(redis_conn: redis.Redis, registry: Registry) -> None:
    """A front end whose queue (no worker on it) holds one job at most."""
    settings = live_settings(max_queue=1, queue_name="lrpseg-full")
    full, stop = start_server(create_app(settings, registry=registry, connection=redis_conn))
    transport = Recording()
    png = factories.png_bytes(factories.defect_image(32)[0])
    try:
        with Client(full, backoff=FAST, transport=transport) as client:
            client.submit(png)
            with pytest.raises(RetriesExhausted) as caught:
                client.submit(png)
    finally:
        stop()
    assert caught.value.status == 503 and "Queue full" in str(caught.value)
    assert [s[2] for s in transport.seen] == [202] + [503] * (FAST.retries + 1)
    assert all(s[3] == "1" for s in transport.seen[1:])


def test_no_server_says_how_to_start_one() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    with Client(f"http://127.0.0.1:{port}") as client, pytest.raises(ServerNotRunning) as caught:
        client.submit(b"x")
    assert "connection refused" in str(caught.value) and f"127.0.0.1:{port}" in str(caught.value)
    assert "make serve" in str(caught.value)
