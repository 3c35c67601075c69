"""Service latency and throughput with the embedded default (`lrpseg serve`), as a user runs it.

For each worker count it starts `lrpseg serve --workers K` (embedded Redis, K worker processes,
the API) on a free port, then:
  latency    N jobs one after another through POST /v1/explain?wait=: end-to-end time at the
             client, the worker's compute time (result.timings.total) and the service overhead
             (their difference: HTTP, upload, decode/validation, Redis, queue hand-offs, JSON);
  throughput N jobs submitted at once to POST /v1/jobs, polled until all finished: jobs/s.

    .venv/bin/python benchmarks/service.py --jobs 20 --sizes 256 512 --workers 1 2
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from lrpseg.data import DefectDatasetConfig, generate_sample


def defect_pngs(size: int, n: int, first_seed: int = 0) -> list[bytes]:
    """n generated images that show a defect (the explanation then has pixels to explain)."""
    out, seed = [], first_seed
    while len(out) < n:
        sample = generate_sample(seed, DefectDatasetConfig(size=size))
        if sample.label == 1:
            out.append(png(sample.image))
        seed += 1
    return out


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((image * 255).round().astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(
    workers: int, threads: int, data_dir: Path, extra_env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "LRPSEG_REDIS_URL")}
    env.update({"LRPSEG_DATA_DIR": str(data_dir), "LRPSEG_TORCH_THREADS": str(threads), "LRPSEG_LOG_LEVEL": "warning"})
    env.update(extra_env)
    command = [sys.executable, "-m", "launch", "serve", "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"lrpseg serve exited with {proc.returncode}")
        try:
            ready = httpx.get(url + "/readyz", timeout=2)
            if ready.status_code == 200 and ready.json()["checks"]["workers"]["detail"] == f"{workers} alive":
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise RuntimeError("the service did not become ready")


def stop_service(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def explain_once(client: httpx.Client, image: bytes, params: str) -> tuple[float, float, dict[str, float]]:
    """(end-to-end ms, worker compute ms, stage ms + where the overhead went)."""
    start = time.perf_counter()
    response = client.post(
        "/v1/explain", params={"wait": 60}, files={"image": ("x.png", image, "image/png")}, data={"params": params}
    )
    e2e = (time.perf_counter() - start) * 1000
    if response.status_code != 200 or response.json()["status"] != "finished":
        raise RuntimeError(f"job did not finish: {response.status_code} {response.text[:300]}")
    view = response.json()
    timings = dict(view["result"]["timings"])
    created, started, ended = (datetime.fromisoformat(view[k]) for k in ("created_at", "started_at", "ended_at"))
    # RQ's timestamps: job created (API) -> started (worker) -> ended (worker, before the result is saved)
    timings["queue_wait"] = (started - created).total_seconds() * 1000
    timings["worker_rq"] = (ended - started).total_seconds() * 1000 - timings["total"]
    timings["api_http"] = e2e - (ended - created).total_seconds() * 1000
    return e2e, view["result"]["timings"]["total"], timings


def latency(url: str, size: int, jobs: int, params: str) -> dict[str, Any]:
    images = defect_pngs(size, jobs)
    with httpx.Client(base_url=url, timeout=120) as client:
        explain_once(client, images[0], params)  # warm the connection and the model for this size
        runs = [explain_once(client, image, params) for image in images]
    e2e = [r[0] for r in runs]
    compute = [r[1] for r in runs]
    overhead = [a - b for a, b in zip(e2e, compute)]
    stages = {k: statistics.median(r[2][k] for r in runs) for k in runs[0][2] if runs[0][2][k] is not None}
    return {
        "size": size,
        "jobs": jobs,
        "e2e_p50_ms": pct(e2e, 50),
        "e2e_p95_ms": pct(e2e, 95),
        "compute_p50_ms": pct(compute, 50),
        "compute_p95_ms": pct(compute, 95),
        "overhead_p50_ms": pct(overhead, 50),
        "overhead_p95_ms": pct(overhead, 95),
        "stages_p50_ms": stages,
    }


def throughput(url: str, size: int, jobs: int, params: str) -> dict[str, Any]:
    images = defect_pngs(size, jobs, first_seed=1000)
    with httpx.Client(base_url=url, timeout=120) as client:
        start = time.perf_counter()

        def submit(image: bytes) -> str:
            response = client.post("/v1/jobs", files={"image": ("x.png", image, "image/png")}, data={"params": params})
            response.raise_for_status()
            return response.headers["location"]

        with ThreadPoolExecutor(4) as pool:
            locations = list(pool.map(submit, images))
        # Jobs end roughly in order: poll the oldest unfinished one only, so that polling does not
        # take the CPU the workers need.
        for location in locations:
            while (status := client.get(location).json()["status"]) not in ("finished", "failed"):
                time.sleep(0.05)
            if status == "failed":
                raise RuntimeError(f"job failed: {location}")
        seconds = time.perf_counter() - start
    return {"size": size, "jobs": jobs, "seconds": seconds, "jobs_per_s": jobs / seconds}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--params", default="{}", help="JobParams JSON for every job")
    parser.add_argument("--model", help="model to serve as the default (LRPSEG_DEFAULT_MODEL)")
    parser.add_argument("--models-dir", type=Path, help="extra models folder (LRPSEG_MODELS_DIR)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    extra_env = {}
    if args.model:
        extra_env["LRPSEG_DEFAULT_MODEL"] = args.model
    if args.models_dir:
        extra_env["LRPSEG_MODELS_DIR"] = str(args.models_dir.resolve())

    report: dict[str, Any] = {
        "params": json.loads(args.params),
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "latency": [],
        "throughput": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for workers in args.workers:
            proc, url = start_service(workers, args.threads, Path(tmp) / f"var{workers}", extra_env)
            try:
                for size in args.sizes:
                    if workers == args.workers[0]:
                        row = latency(url, size, args.jobs, args.params)
                        report["latency"].append(row)
                        print(
                            f"latency  {size}²: e2e p50 {row['e2e_p50_ms']:.1f} ms p95 {row['e2e_p95_ms']:.1f} ms | "
                            f"compute p50 {row['compute_p50_ms']:.1f} ms p95 {row['compute_p95_ms']:.1f} | "
                            f"overhead p50 {row['overhead_p50_ms']:.1f} ms p95 {row['overhead_p95_ms']:.1f}",
                            flush=True,
                        )
                        print(
                            "         stages p50 (ms): "
                            + ", ".join(f"{k} {v:.1f}" for k, v in row["stages_p50_ms"].items()),
                            flush=True,
                        )
                    row = throughput(url, size, args.jobs, args.params)
                    row["workers"] = workers
                    report["throughput"].append(row)
                    print(
                        f"throughput {size}² with {workers} worker(s): {row['jobs_per_s']:.2f} jobs/s "
                        f"({args.jobs} jobs in {row['seconds']:.1f} s)",
                        flush=True,
                    )
            finally:
                stop_service(proc)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
