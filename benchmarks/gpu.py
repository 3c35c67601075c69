"""One script for a GPU machine (under 5 minutes): throughput of LRP, masks and whole jobs, peak memory,
the same on the CPU for the ratio, bf16/fp16 error against fp32, and the CUDA tests.

    .venv/bin/python benchmarks/gpu.py                       # on a CUDA machine: cuda, then cpu for the ratio
    .venv/bin/python benchmarks/gpu.py --device cpu --quick  # seconds: small sizes (tests/benchmarks/test_gpu.py)

For each device, size (256², 512²) and batch (1, 8, 32) with the shipped default U-Net on generated
8-bit defect images it finds a defect in: images/s of the plain gradient (forward + backward to the input, the floor), of one
batched LRP sweep (`conserving-reference`, the jobs' default), of the mask extractors (simple, gmm, bmm, component, on device maps)
and jobs/s of whole jobs (`lrpseg.pipeline.run_jobs`: one shared pass, then each job's masks,
metrics and PNGs, encoded by a 2-thread pool), with the peak device memory of each. At batch 1 it
prints the job's split (forward, LRP, masks, metrics, render) and job / gradient: the targets of
issue 16 (masks <= 15 % of a job's compute, a job <= 1.6x a gradient). The CPU runs batches 1 and 8
only (32 would take minutes). Then the error of bf16 and fp16 against fp32 (max |diff| of the
relevance, that over max |R|, the relevance-sum ratio, IoU of the gmm/simple masks against fp32's);
off CUDA that is measured on the CPU, where the service does not serve low precision. Last, on
CUDA, `pytest -m cuda` and the older CUDA-only tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.job_vs_gradient import as_upload
from lrpseg.data import DefectDatasetConfig, generate_sample
from lrpseg.io import DecodedImage
from lrpseg.lrp import explain
from lrpseg.masks import extract
from lrpseg.pipeline import run_jobs
from lrpseg.precision import DTYPES
from lrpseg.registry import ModelInfo, default_registry
from lrpseg.render.encoding import PngEncoder
from schemas.params import JobParams

EXTRACTORS = ("simple", "gmm", "bmm", "component")
RULES = "conserving-reference"  # the jobs' default composite
OLDER_CUDA_TESTS = [
    "tests/lrpseg/lrp/test_engine.py::test_cuda_matches_cpu",
    "tests/service/test_prometheus.py::test_device_memory_reads_the_cuda_allocator",
]


def defect_images(size: int, n: int, model: torch.nn.Module, info: ModelInfo) -> list[DecodedImage]:
    """n generated 8-bit grey images (as the service decodes a PNG) in which `model` finds a defect:
    an image with nothing predicted would leave an empty map, which the masks skip."""
    out, seed = [], 0
    device = next(model.parameters()).device
    while len(out) < n:
        if seed >= 50 * n + 100:
            raise RuntimeError(f"the model found a defect in {len(out)} of the first {seed} generated images")
        sample = generate_sample(seed, DefectDatasetConfig(size=size))
        seed += 1
        if sample.label != 1:
            continue
        image = as_upload(sample.image, 8)
        with torch.no_grad():
            found = model(model_input(info, [image], device)).argmax(1) == 1
        if bool(found.any()):
            out.append(image)
    return out


class Meter:
    """Median seconds of a call over `repeats` runs after one warm-up, and its peak device memory."""

    def __init__(self, device: torch.device, repeats: int) -> None:
        self.device, self.repeats = device, repeats

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, fn: Callable[[], object]) -> tuple[float, float | None]:
        fn()
        self.sync()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        times = []
        for _ in range(self.repeats):
            start = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else None
        return statistics.median(times), peak


def model_input(info: ModelInfo, images: list[DecodedImage], device: torch.device) -> torch.Tensor:
    return info.normalize(torch.from_numpy(np.stack([i.array for i in images])).to(device))


def bench_size(
    model: torch.nn.Module, info: ModelInfo, device: torch.device, size: int, batches: list[int], repeats: int
) -> list[dict[str, Any]]:
    meter = Meter(device, repeats)
    images = defect_images(size, max(batches), model, info)
    encoder = PngEncoder(2)
    rows = []
    for b in batches:
        x = model_input(info, images[:b], device)

        def gradient(x: torch.Tensor = x) -> None:
            xx = x.clone().requires_grad_(True)
            model(xx).sum().backward()

        def lrp(x: torch.Tensor = x) -> torch.Tensor:
            return explain(model, x, target="class", cls=1, rules=RULES, bounds=info.zbox_bounds).relevance

        maps = [r.sum(0, dtype=torch.float64) for r in lrp()]

        def masks(maps: list[torch.Tensor] = maps) -> None:
            for m in maps:
                for name in EXTRACTORS:
                    extract(name, m)

        results: list[Any] = []

        def jobs(b: int = b, results: list[Any] = results) -> None:
            results[:] = run_jobs(model, info, images[:b], [JobParams()] * b, device=device, encoder=encoder)

        row: dict[str, Any] = {"device": str(device), "size": size, "batch": b}
        for name, fn in (("gradient", gradient), ("lrp", lrp), ("masks", masks), ("job", jobs)):
            seconds, peak = meter(fn)
            row[f"{name}_ms"] = seconds * 1e3
            row[f"{name}_per_s"] = b / seconds
            row[f"{name}_peak_mb"] = peak
        stages = ("forward", "lrp", "masks", "metrics", "render")
        row["split_ms"] = {s: statistics.mean(r.result["timings"].get(s, 0.0) for r in results) for s in stages}
        rows.append(row)
    encoder.shutdown()
    return rows


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 1.0


def precision_errors(model: torch.nn.Module, info: ModelInfo, device: torch.device, size: int) -> list[dict[str, Any]]:
    """bf16/fp16 against fp32 on one defect image: relevance error and mask agreement."""
    x = model_input(info, defect_images(size, 1, model, info), device)
    ref = explain(model, x, target="class", cls=1, rules=RULES, bounds=info.zbox_bounds).relevance[0].sum(0)
    ref_masks = {n: extract(n, ref).mask for n in ("gmm", "simple")}
    peak = float(ref.abs().max())
    rows = []
    for name in ("bf16", "fp16"):
        low = explain(model, x, target="class", cls=1, rules=RULES, bounds=info.zbox_bounds, precision=DTYPES[name])
        r = low.relevance[0].sum(0)
        finite = bool(torch.isfinite(r).all())
        diff = float((r - ref).abs().max()) if finite else float("inf")
        row: dict[str, Any] = {
            "device": str(device),
            "size": size,
            "precision": name,
            "finite": finite,
            "max_abs_error": diff,
            "max_rel_error": diff / peak if peak else None,
            "sum_ratio": float(r.sum() / ref.sum()) if finite else None,
        }
        for mask_name, expected in ref_masks.items():
            row[f"iou_{mask_name}"] = iou(extract(mask_name, r).mask, expected) if finite else None
        rows.append(row)
    return rows


def run_cuda_tests() -> int:
    command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests", *OLDER_CUDA_TESTS]
    print("$ " + " ".join(command), flush=True)
    return subprocess.call(command)


def print_speed(rows: list[dict[str, Any]]) -> None:
    print(f"{'device':<8} {'size':>5} {'batch':>5} | {'grad img/s':>10} {'lrp img/s':>9} {'masks img/s':>11} "
          f"{'jobs/s':>7} | peak MB grad/lrp/masks/job")  # fmt: skip
    for r in rows:
        peaks = "/".join("-" if r[f"{k}_peak_mb"] is None else f"{r[f'{k}_peak_mb']:.0f}"
                         for k in ("gradient", "lrp", "masks", "job"))  # fmt: skip
        print(f"{r['device']:<8} {r['size']:>5} {r['batch']:>5} | {r['gradient_per_s']:>10.2f} {r['lrp_per_s']:>9.2f} "
              f"{r['masks_per_s']:>11.2f} {r['job_per_s']:>7.2f} | {peaks}")  # fmt: skip
    for r in rows:
        if r["batch"] != 1:
            continue
        split = r["split_ms"]
        compute = sum(split.values())
        print(f"{r['device']} {r['size']}² one job: " + ", ".join(f"{k} {v:.1f}" for k, v in split.items())
              + f" ms | masks {split['masks'] / compute:.1%} of the compute | job / gradient "
              f"{r['job_ms'] / r['gradient_ms']:.2f}x, LRP / gradient {r['lrp_ms'] / r['gradient_ms']:.2f}x")  # fmt: skip


def print_ratios(rows: list[dict[str, Any]]) -> None:
    by_key = {(r["device"], r["size"], r["batch"]): r for r in rows}
    for r in rows:
        cpu = by_key.get(("cpu", r["size"], r["batch"]))
        if r["device"] == "cpu" or cpu is None:
            continue
        print(f"{r['device']} / cpu at {r['size']}² batch {r['batch']}: "
              + ", ".join(f"{k} {r[f'{k}_per_s'] / cpu[f'{k}_per_s']:.1f}x" for k in ("gradient", "lrp", "masks", "job")))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (cuda if there is one), cuda, cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="64², batches 1 and 2, one repeat (seconds)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--cpu-batches", type=int, nargs="+", default=[1, 8], help="batches of the CPU comparison")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu-repeats", type=int, default=1, help="repeats of the CPU comparison (after a warm-up)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU comparison on a CUDA machine")
    parser.add_argument("--no-tests", action="store_true", help="skip the CUDA tests")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.sizes, args.batches, args.cpu_batches, args.repeats = [64], [1, 2], [1, 2], 1
    name = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    name = "cpu" if name == "auto" else name
    device = torch.device(name)
    plan = [(device, args.batches, args.repeats)]
    if device.type == "cuda" and not args.no_cpu:
        plan.append((torch.device("cpu"), args.cpu_batches, args.cpu_repeats))
    registry = default_registry()
    info = registry.get()
    cpus, load = os.cpu_count(), os.getloadavg()[0]
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    print(f"model {info.id} | gpu {gpu} | cpus {cpus} load {load:.2f} | torch threads {torch.get_num_threads()}")
    report: dict[str, Any] = {"model": info.id, "gpu": gpu, "cpus": cpus, "speed": [], "precision": []}
    started = time.perf_counter()
    for dev, batches, repeats in plan:
        model = registry.load(info.id, device=dev)
        for size in args.sizes:
            report["speed"] += bench_size(model, info, dev, size, batches, repeats)
    print_speed(report["speed"])
    print_ratios(report["speed"])
    model = registry.load(info.id, device=device)
    for size in args.sizes:
        report["precision"] += precision_errors(model, info, device, size)
    note = "" if device.type == "cuda" else " (measured on the CPU, where the service serves fp32 only)"
    print(f"low precision against fp32{note}:")
    for p in report["precision"]:
        ious = ", ".join(f"IoU {k[4:]} {p[k]:.3f}" for k in ("iou_gmm", "iou_simple") if p[k] is not None)
        share = "-" if p["max_rel_error"] is None else f"{p['max_rel_error']:.2%}"
        print(f"  {p['precision']} {p['size']}²: max |diff| {p['max_abs_error']:.3g} ({share} of max |R|), "
              f"sum ratio {p['sum_ratio']}, {ious}")  # fmt: skip
    report["seconds"] = time.perf_counter() - started
    print(f"measured in {report['seconds']:.1f} s")
    rc = 0
    if device.type == "cuda" and not args.no_tests:
        rc = run_cuda_tests()
        report["cuda_tests_rc"] = rc
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
