"""Scale-out: the API and M worker processes that share only Redis and an S3 store.

Starts, on 127.0.0.1: a private redis-server, moto's S3 server (an S3-protocol endpoint; a
real deployment points AWS_ENDPOINT_URL at MinIO/Ceph or leaves it unset for AWS), the API
(`lrpseg api`) and then, for each M in --workers, M `lrpseg worker` processes (one torch
thread each) with LRPSEG_ARTIFACT_STORE=s3://bench/run. For each M it queues --jobs jobs at
once and times the first submission to the last job's end: jobs/s, and the efficiency
jobs/s(M) / (M x jobs/s(1)). It also measures, with no worker running, the Redis memory one
queued job takes (its upload and job hash), and after the runs the Redis and object-store bytes
one finished job leaves (the capacity plan in docs/operations.md).

    .venv/bin/python benchmarks/scale.py --workers 1 2 3 --jobs 24 --size 128
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import httpx
import redis
from botocore.config import Config

from benchmarks.load import ROOT, free_port, images, redis_binary, start_worker

BUCKET = "bench"
AWS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1"}


def start_backends(tmp: Path, log: Any) -> tuple[list[subprocess.Popen[bytes]], dict[str, str]]:
    """Redis and the S3 server; the environment every service process gets."""
    redis_port, s3_port = free_port(), free_port()
    redis_cmd = [redis_binary(), "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(tmp),
                 "--appendonly", "yes", "--save", "", "--maxmemory-policy", "noeviction"]  # fmt: skip
    s3_cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)]
    procs = [subprocess.Popen(c, stdout=log, stderr=subprocess.STDOUT) for c in (redis_cmd, s3_cmd)]
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith(("LRPSEG_", "AWS_"))}
    env.update(AWS)
    env.update(
        {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
            "LRPSEG_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "LRPSEG_ARTIFACT_STORE": f"s3://{BUCKET}/run",
            "LRPSEG_TORCH_THREADS": "1",
            "LRPSEG_LOG_LEVEL": "warning",
            "LRPSEG_MAX_QUEUE": "100000",
            "LRPSEG_MAX_JOBS_PER_KEY": "100000",
            "LRPSEG_RATE_LIMIT": "0",
            "LRPSEG_PRELOAD": "default",
            "PYTHONPATH": str(ROOT),
        }
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            s3(env).create_bucket(Bucket=BUCKET)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    return procs, env


def s3(env: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"],
        region_name=AWS["AWS_DEFAULT_REGION"],
        config=Config(s3={"addressing_style": "path"}),
    )


def alive_workers(url: str) -> int:
    try:
        detail = httpx.get(url + "/readyz", timeout=2).json()["checks"].get("workers", {}).get("detail", "")
    except (httpx.HTTPError, ValueError):
        return -1
    first = detail.split()[0] if detail else ""
    return int(first) if first.isdigit() else 0  # "N alive" / "no worker alive"


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.3)


def submit_all(url: str, pngs: list[bytes], jobs: int, params: str) -> list[str]:
    def one(n: int) -> str:
        files = {"image": ("x.png", pngs[n % len(pngs)], "image/png")}
        response = httpx.post(url + "/v1/jobs", files=files, data={"params": params}, timeout=60)
        response.raise_for_status()
        return str(response.json()["job_id"])

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(jobs)))


def wait_all(url: str, ids: list[str], timeout: float) -> None:
    left = set(ids)
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=10) as client:
        while left:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(left)} jobs did not end")
            for job_id in list(left):
                status = client.get(f"/v1/jobs/{job_id}").json()["status"]
                if status == "failed":
                    raise RuntimeError(f"job {job_id} failed")
                if status == "finished":
                    left.discard(job_id)
            time.sleep(0.1)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3], help="worker counts to run")
    parser.add_argument("--jobs", type=int, default=24, help="jobs per worker count")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--params", default="{}", help="job params JSON (default: everything)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="lrpseg-scale-"))
    log = (tmp / "service.log").open("ab")
    backends, env = start_backends(tmp, log)
    api_port = free_port()
    url = f"http://127.0.0.1:{api_port}"
    api = subprocess.Popen(
        [sys.executable, "-m", "launch", "api", "--port", str(api_port)],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    connection = redis.Redis.from_url(env["LRPSEG_REDIS_URL"])
    pngs = images(args.size, 8)
    rows = []
    try:
        wait_until(lambda: alive_workers(url) == 0, 120, "the API")
        # Redis per queued job: no worker runs, so the jobs stay queued with their uploads.
        before = int(connection.info("memory")["used_memory"])
        queued = submit_all(url, pngs, 20, args.params)
        per_queued = (int(connection.info("memory")["used_memory"]) - before) / len(queued)
        for job_id in queued:
            httpx.delete(f"{url}/v1/jobs/{job_id}", timeout=10)

        for m in args.workers:
            workers = [start_worker(env, log) for _ in range(m)]
            try:
                wait_until(lambda m=m: alive_workers(url) == m, 300, f"{m} worker(s)")
                load = os.getloadavg()[0]
                start = time.monotonic()
                ids = submit_all(url, pngs, args.jobs, args.params)
                wait_all(url, ids, timeout=60 * args.jobs)
                seconds = time.monotonic() - start
                rows.append((m, len(ids), seconds, len(ids) / seconds, load, os.getloadavg()[0]))
                print(f"M={m}: {len(ids)} jobs in {seconds:.1f} s = {len(ids) / seconds:.2f} jobs/s", flush=True)
            finally:
                stop(workers)
                wait_until(lambda: alive_workers(url) == 0, 60, "the workers to retire")

        # Per finished job: what Redis keeps (result, job hash) and what the object store holds.
        finished = sum(r[1] for r in rows)
        listed = s3(env).get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        objects = [o for page in listed for o in page.get("Contents", [])]
        in_redis = int(connection.info("memory")["used_memory"]) - before
    finally:
        stop([api])
        stop(backends)
        log.close()

    base = rows[0][3] / rows[0][0]
    print(f"\n{'M':>2} {'jobs':>5} {'seconds':>8} {'jobs/s':>7} {'efficiency':>10} {'load avg':>12}")
    for m, n, seconds, rate, load0, load1 in rows:
        print(f"{m:>2} {n:>5} {seconds:>8.1f} {rate:>7.2f} {rate / (m * base):>10.2f} {load0:>5.1f}->{load1:<5.1f}")
    print(f"\ncores: {os.cpu_count()}, image {args.size}x{args.size}, params {args.params}")
    print(f"Redis per queued job (upload + job): {per_queued / 1024:.1f} KiB")
    print(f"Redis per finished job (result, records, stats): {in_redis / finished / 1024:.1f} KiB")
    total = sum(o["Size"] for o in objects)
    print(f"object store per finished job: {total / finished / 1024:.1f} KiB in {len(objects) / finished:.0f} objects")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
