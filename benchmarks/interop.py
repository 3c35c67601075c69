"""Batch intake and callback latency, in process against a real Redis (docs/interop.md).

1. Intake: N images as N `POST /v1/jobs`, as one `POST /v1/batches` with N parts, and as one
   zip: wall time in the API (decode + validate every image, store, enqueue), no worker.
2. Callbacks: jobs with a callback_url run by an in-process burst worker while a deliverer
   thread (the one every worker process runs) sends to an http.server on 127.0.0.1; latency =
   receiver arrival - the job's end as RQ stored it.

    .venv/bin/python -m benchmarks.interop --redis redis://127.0.0.1:6379/9 --images 32 --size 256
"""

from __future__ import annotations

import argparse
import io
import statistics
import threading
import time
import uuid
import warnings
import zipfile
from datetime import UTC
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import redis
from PIL import Image
from pydantic import SecretStr
from rq.job import Job
from rq.serializers import JSONSerializer

from core.settings import Settings
from lrpseg.data import DefectDatasetConfig, generate_sample
from lrpseg.registry import default_registry
from service.app import create_app
from workers import deliverer, runtime
from workers.worker import build_worker

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


def png(size: int, seed: int) -> bytes:
    image = generate_sample(seed, DefectDatasetConfig(size=size)).image
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


CREATED: list[str] = []  # job ids this run made (their rq:job / rq:results keys go at the end)


def clear(connection: redis.Redis, prefix: str, queue: str) -> None:
    """Only what this run wrote: its key prefix, its queue's RQ keys and its jobs."""
    keys = [*connection.scan_iter(f"{prefix}:*", count=1000), *connection.scan_iter(f"rq:*{queue}*", count=1000)]
    keys += [k for job_id in CREATED for k in (f"rq:job:{job_id}", f"rq:results:{job_id}")]
    if keys:
        connection.delete(*keys)
    CREATED.clear()


def accepted_ids(response) -> list[str]:
    body = response.json()
    return [body["job_id"]] if "job_id" in body else [i["job_id"] for i in body["items"]]


def intake(client: TestClient, images: list[bytes], connection: redis.Redis, settings: Settings) -> dict[str, float]:
    out = {}
    start = time.perf_counter()
    for i, data in enumerate(images):
        response = client.post("/v1/jobs", files={"image": (f"{i}.png", data, "image/png")})
        assert response.status_code == 202, response.text
        CREATED.extend(accepted_ids(response))
    out["single"] = time.perf_counter() - start
    clear(connection, settings.key_prefix, settings.queue_name)

    parts = [("images", (f"{i:03d}.png", data, "image/png")) for i, data in enumerate(images)]
    start = time.perf_counter()
    response = client.post("/v1/batches", files=parts)
    assert response.status_code == 202, response.text
    CREATED.extend(accepted_ids(response))
    out["batch_parts"] = time.perf_counter() - start
    clear(connection, settings.key_prefix, settings.queue_name)

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for i, data in enumerate(images):
            archive.writestr(f"{i:03d}.png", data)
    start = time.perf_counter()
    response = client.post("/v1/batches", files={"archive": ("b.zip", buffer.getvalue(), "application/zip")})
    assert response.status_code == 202, response.text
    CREATED.extend(accepted_ids(response))
    out["batch_zip"] = time.perf_counter() - start
    clear(connection, settings.key_prefix, settings.queue_name)
    return out


def callback_latency(
    client: TestClient, connection: redis.Redis, settings: Settings, jobs: int, size: int
) -> list[float]:
    arrivals: dict[str, float] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            arrivals[self.headers["X-Lrpseg-Delivery"]] = time.time()
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    ids = []
    for i in range(jobs):
        files = {"image": (f"{i}.png", png(size, 1000 + i), "image/png")}
        response = client.post("/v1/jobs", files=files, data={"params": '{"task": "segment"}', "callback_url": url})
        ids.append(response.json()["job_id"])
    CREATED.extend(ids)
    stop = threading.Event()
    thread = deliverer.start_thread(connection, settings, stop)
    build_worker(settings, connection=connection, heartbeat=False).work(burst=True, logging_level="WARNING")
    deadline = time.monotonic() + 30
    while len(arrivals) < jobs and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(timeout=10)
    server.shutdown()
    latencies = []
    for job_id in ids:
        job = Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
        delivery = job.meta["callback"]["delivery_id"]
        ended = job.ended_at if job.ended_at.tzinfo else job.ended_at.replace(tzinfo=UTC)
        latencies.append(arrivals[delivery] - ended.timestamp())
    runtime.reset()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", required=True, help="a Redis URL this may write to (keys under a fresh prefix)")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--callback-jobs", type=int, default=10)
    args = parser.parse_args()

    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        redis_url=args.redis,
        key_prefix=f"bench-{tag}",
        queue_name=f"bench-{tag}",
        device="cpu",
        torch_threads=1,
        max_queue=10_000,
        callback_allowed_hosts=["127.0.0.1"],
        callback_secret=SecretStr("bench"),
        log_level="warning",
    )
    connection = redis.Redis.from_url(args.redis)
    client = TestClient(create_app(settings, registry=default_registry(), connection=connection))
    images = [png(args.size, i) for i in range(args.images)]
    try:
        intake(client, images[:2], connection, settings)  # warm-up
        times = intake(client, images, connection, settings)
        n = args.images
        print(f"intake of {n} images {args.size}x{args.size} (decode + validate + store + enqueue, no worker):")
        for name, seconds in times.items():
            print(f"  {name:12s} {seconds * 1000:8.1f} ms total  {seconds * 1000 / n:6.2f} ms/image")
        latencies = callback_latency(client, connection, settings, args.callback_jobs, 64)
        print(
            f"callback latency, job end -> receiver ({len(latencies)} jobs, poll {settings.callback_poll:g} s): "
            f"median {statistics.median(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms"
        )
    finally:
        clear(connection, settings.key_prefix, settings.queue_name)


if __name__ == "__main__":
    main()
