"""A series end to end through a real Orthanc in pull mode: stored in Orthanc -> pulled by WADO-RS ->
3-D U-Net + LRP + masks -> SEG and relevance Parametric Map STOW-RS'd back into Orthanc.

    .venv/bin/python benchmarks/pacs_pull.py [--slices 64] [--size 64] [--repeats 3] [--threads 2]

Needs Debian's `orthanc` + `orthanc-dicomweb` (as the tests). Everything runs here: Orthanc on
loopback, embedded Redis, the app in-process, one burst worker and the deliverer thread a worker
runs. The clock starts at the submission and stops when the job view says the delivery is
`delivered` (the SEG is in Orthanc). Also split: the burst worker (its start and model load, then
the job: WADO-RS fetch + decode, forward + LRP, and the job's own total with masks, render, DICOM)
and the delivery (from the worker's end to `delivered`). Medians of the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.*
from core.settings import Settings
from core.store import Store
from service.app import create_app
from service.embedded import start_embedded
from tests.orthanc_server import OrthancServer, orthanc_available
from tests.service.factories import VOLUME, write_clinical_models
from tests.service.pacs_series import encode, make_series
from workers import deliverer
from workers.worker import build_worker


def run_once(
    client: TestClient, settings: Settings, redis: object, registry: object, orthanc: OrthancServer, n: int, size: int
) -> dict[str, float]:
    orthanc.clear()
    source = make_series(n, size, seed=n)
    for ds in source:
        orthanc.upload(encode(ds))
    reference = {
        "url": orthanc.dicomweb_url,
        "study": source[0].StudyInstanceUID,
        "series": source[0].SeriesInstanceUID,
    }
    params = {"model": VOLUME, "source": {"dicomweb": reference}, "masks": ["simple"], "lrp": {"composite": "ours"}}
    stop = threading.Event()
    thread = deliverer.start_thread(redis, settings, stop, Store(redis, settings.key_prefix))  # type: ignore[arg-type]
    try:
        start = time.perf_counter()
        response = client.post("/v1/jobs", data={"params": json.dumps(params)})
        assert response.status_code == 202, response.text
        build_worker(settings, connection=redis, registry=registry, heartbeat=False).work(  # type: ignore[arg-type]
            burst=True, logging_level="WARNING"
        )
        job_end = time.perf_counter()
        while True:
            view = client.get(response.headers["location"]).json()
            if view["deliveries"][0]["status"] != "pending":
                break
            time.sleep(0.01)
        end = time.perf_counter()
    finally:
        stop.set()
        thread.join(timeout=30)
    assert view["status"] == "finished" and view["deliveries"][0]["status"] == "delivered", view
    assert len(orthanc.instance_ids()) == n + 2  # the source, the SEG and the map
    timings = view["result"]["timings"]
    return {
        "total_s": end - start,
        "job_s": job_end - start,
        "fetch_decode_s": timings["decode"] / 1000,
        "pass_s": (timings["forward"] + timings["lrp"]) / 1000,
        "in_job_s": timings["total"] / 1000,
        "deliver_s": end - job_end,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if not orthanc_available():
        print("needs Debian's orthanc + orthanc-dicomweb", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="lrpseg-pacs-"))
    registry = write_clinical_models(work / "models")
    orthanc = OrthancServer(work / "orthanc")
    orthanc.start()
    embedded = start_embedded(work / "redis")
    settings = Settings(
        redis_url=embedded.url,
        device="cpu",
        torch_threads=args.threads,
        log_level="warning",
        dicomweb_allowed_hosts=["127.0.0.1"],
        dicomweb_destination=orthanc.dicomweb_url,
        callback_poll=0.02,
    )
    load_before = os.getloadavg()[0]
    try:
        client = TestClient(create_app(settings, registry=registry, connection=embedded.server))
        runs = [
            run_once(client, settings, embedded.server, registry, orthanc, args.slices, args.size)
            for _ in range(args.repeats)
        ]
    finally:
        embedded.stop()
        orthanc.stop()
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(
        f"{args.slices} slices of {args.size}x{args.size}, tiny 3-D U-Net, {args.threads} torch threads, "
        f"{args.repeats} repeats, load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    print(
        "| slices | total s | slices/s | worker s (job: fetch+decode, pass, all) | delivery s (STOW-RS of SEG + map) |"
    )
    print("| --- | --- | --- | --- | --- |")
    print(
        f"| {args.slices} | {med['total_s']:.2f} | {args.slices / med['total_s']:.1f} | {med['job_s']:.2f} "
        f"({med['fetch_decode_s']:.2f}, {med['pass_s']:.2f}, {med['in_job_s']:.2f}) | {med['deliver_s']:.2f} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
