"""Where one job's time goes on a device: torch.profiler over whole jobs, and each mask extractor on its own.

    .venv/bin/python benchmarks/job_profile.py                   # cuda if there is one, 256², 5 jobs
    .venv/bin/python benchmarks/job_profile.py --device cpu --size 128 --jobs 2

Prints the jobs' stage split, the operators with the most host time (on CUDA: the launches, and the
device-to-host copies and synchronisations each job waits on, which bound a GPU job far below the
device's speed), the operators with the most device time, and the median milliseconds of each mask
extractor on the job's own map. Used to find what keeps a GPU job at CPU speed (README, "GPU").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.gpu import EXTRACTORS, RULES, defect_images, model_input
from lrpseg.lrp import explain
from lrpseg.masks import extract
from lrpseg.pipeline import run_jobs
from lrpseg.registry import default_registry
from lrpseg.render.encoding import PngEncoder
from schemas.params import JobParams

WAITS = ("aten::_local_scalar_dense", "aten::item", "cudaStreamSynchronize", "cudaMemcpyAsync", "aten::nonzero")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def extractor_ms(device: torch.device, relevance: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median ms of each extractor on one map (after a warm-up)."""
    out = {}
    for name in EXTRACTORS:
        extract(name, relevance)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            extract(name, relevance)
            sync(device)
            times.append((time.perf_counter() - start) * 1e3)
        out[name] = statistics.median(times)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (cuda if there is one), cuda or cpu")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--jobs", type=int, default=5, help="jobs profiled (one at a time, after a warm-up)")
    parser.add_argument("--rows", type=int, default=25, help="operators listed per table")
    args = parser.parse_args(argv)
    name = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = torch.device("cpu" if name == "auto" else name)
    registry = default_registry()
    info = registry.get()
    model = registry.load(info.id, device=device)
    images = defect_images(args.size, 1, model, info)
    encoder = PngEncoder(2)

    def job() -> dict[str, float]:
        result = run_jobs(model, info, images, [JobParams()], device=device, encoder=encoder)[0]
        sync(device)
        return result.result["timings"]

    job()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        timings = [job() for _ in range(args.jobs)]
    stages = ("forward", "lrp", "masks", "metrics", "render", "total")
    print(f"device {device} | {args.size}² | {args.jobs} jobs | median ms per stage:")
    print("  " + ", ".join(f"{s} {statistics.median(t.get(s, 0.0) for t in timings):.1f}" for s in stages))
    events = prof.key_averages()
    print("host waits per job: " + ", ".join(
        f"{e.key} {e.count / args.jobs:.0f}" for e in events if e.key in WAITS))  # fmt: skip
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    if device.type == "cuda":
        print(events.table(sort_by="self_device_time_total", row_limit=args.rows))
    x = model_input(info, images, device)
    relevance = explain(model, x, target="class", cls=1, rules=RULES, bounds=info.zbox_bounds).relevance[0].sum(0)
    per = extractor_ms(device, relevance.double(), repeats=5)
    print("extractors (ms, median of 5): " + ", ".join(f"{k} {v:.1f}" for k, v in per.items()))
    encoder.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
