"""Worker throughput with batching off and on: N queued jobs, one worker, the shipped default model.

For each image size and params set, N jobs are submitted through the API (in-process app,
embedded Redis) and one burst worker (torch threads as given) runs them all; jobs/s is N over
the worker's wall time (models are loaded and warmed up before the clock starts). Configurations
(batch_max 1 = off, 4, 8) are interleaved within each repeat (in a rotating order), so their ratios
come from one run.

    .venv/bin/python benchmarks/shared_pass.py --jobs 16 --sizes 128 256 --batch 1 4 8 --threads 2

Params sets: `full` is `{}` (LRP `ours`, all three masks, all artifacts: the per-image tail is
not batched); `explain` keeps only the shared part (`masks: []`, `artifacts: [relevance.npy]`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for benchmarks.service
from benchmarks.service import defect_pngs
from core.settings import Settings
from lrpseg.registry import default_registry
from service.app import create_app
from service.embedded import start_embedded
from workers.worker import build_worker

PARAMS = {"full": {}, "explain": {"masks": [], "artifacts": ["relevance.npy"]}}


def run_once(redis: Any, settings: Settings, images: list[bytes], params: dict[str, Any]) -> dict[str, float]:
    redis.flushdb()
    registry = default_registry()
    client = TestClient(create_app(settings, registry=registry, connection=redis))
    ids = []
    for image in images:
        files = {"image": ("image.png", image, "image/png")}
        response = client.post("/v1/jobs", files=files, data={"params": json.dumps(params)})
        assert response.status_code == 202, response.text
        ids.append(response.json()["job_id"])
    worker = build_worker(settings, connection=redis, registry=registry, heartbeat=False)
    start = time.perf_counter()
    worker.work(burst=True, logging_level="WARNING")
    wall = time.perf_counter() - start
    shared, tail, sizes = [], [], []
    for job_id in ids:
        view = client.get(f"/v1/jobs/{job_id}").json()
        assert view["status"] == "finished", view
        t = view["result"]["timings"]
        sizes.append(t["batch_size"])
        shared.append((t["forward"] + t["lrp"]) / t["batch_size"])
        tail.append(sum(t.get(k) or 0.0 for k in ("masks", "metrics", "render")))
    return {
        "jobs_per_s": len(ids) / wall,
        "mean_batch": statistics.mean(sizes),
        "pass_ms_per_job": statistics.median(shared),
        "tail_ms": statistics.median(tail),
        "load": os.getloadavg()[0],  # other processes on the machine (1-minute load average) after the run
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4, 8], help="batch_max values (1 = off)")
    parser.add_argument("--params", nargs="+", default=list(PARAMS), choices=list(PARAMS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    data = Path(tempfile.mkdtemp(prefix="lrpseg-batching-"))
    embedded = start_embedded(data)
    base = Settings(
        redis_url=embedded.url, device="cpu", torch_threads=args.threads, preload="default", log_level="warning"
    )
    runs: dict[tuple[int, str, int], list[dict[str, float]]] = {}
    load_before = os.getloadavg()[0]
    try:
        images = {size: defect_pngs(size, args.jobs) for size in args.sizes}
        for repeat in range(args.repeats):
            order = args.batch[repeat % len(args.batch) :] + args.batch[: repeat % len(args.batch)]  # no fixed first
            for size in args.sizes:
                for name in args.params:
                    for batch in order:
                        settings = base.model_copy(update={"batch_max": batch})
                        runs.setdefault((size, name, batch), []).append(
                            run_once(embedded.server, settings, images[size], PARAMS[name])
                        )
                        last = runs[(size, name, batch)][-1]
                        print(f"{size} {name} batch_max={batch}: {last}", file=sys.stderr, flush=True)
    finally:
        embedded.stop()
    print(file=sys.stderr)

    rows = []
    load = f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    print(f"{args.jobs} jobs, 1 worker, {args.threads} torch threads, default model, {args.repeats} repeats, {load}")
    print("jobs/s: median and best of the repeats; vs off: the same for batch_max / off; ms: medians")
    header = ["size", "params", "batch_max", "jobs/s median / best", "vs off median / best", "mean batch"]
    print("| " + " | ".join(header + ["pass ms/job", "tail ms", "load"]) + " |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for size in args.sizes:
        for name in args.params:
            base_runs = [r["jobs_per_s"] for r in runs[(size, name, args.batch[0])]]
            off, off_best = statistics.median(base_runs), max(base_runs)
            for batch in args.batch:
                rs = runs[(size, name, batch)]
                row = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                best = max(r["jobs_per_s"] for r in rs)
                row |= {"size": size, "params": name, "batch_max": batch, "best_jobs_per_s": best}
                row |= {"ratio": row["jobs_per_s"] / off, "best_ratio": best / off_best}
                rows.append(row)
                print(
                    f"| {size}² | {name} | {batch} | {row['jobs_per_s']:.2f} / {best:.2f} | "
                    f"{row['ratio']:.2f} / {row['best_ratio']:.2f} | {row['mean_batch']:.1f} | "
                    f"{row['pass_ms_per_job']:.0f} | {row['tail_ms']:.0f} | {row['load']:.1f} |"
                )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
