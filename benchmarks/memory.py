"""Peak memory per pixel of the API's intake and of a worker's job, against image size.

Each measurement runs in a fresh subprocess (so peaks do not mix) and reports the growth of the
process's peak RSS (resource.getrusage ru_maxrss) over its baseline:
- api: the submission path of `POST /v1/jobs` (read the upload, `lrpseg.inputs.prepare_inputs`:
  decode + checks), baseline = after imports and one small warm-up image;
- worker: one whole job (`prepare_inputs` + `lrpseg.pipeline.run_prepared`: forward, LRP,
  masks, renders, artifacts), baseline = after the model is loaded and warmed up.

Printed per size: peak growth in MiB and bytes per pixel. The worker's bytes per pixel is what
`LRPSEG_WORKER_MEMORY` (docs/operations.md, "Memory") is divided by to size max_pixels.

    .venv/bin/python benchmarks/memory.py --sizes 256 512 1024
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import io, json, resource, sys, threading, time
import numpy as np
import torch
from PIL import Image
torch.set_num_threads(1)
from lrpseg.heap import fit_heap, pin_mmap_threshold
from lrpseg.inputs import DecodeLimits, RawInput, prepare_inputs
from lrpseg.pipeline import run_prepared, warm_up
from lrpseg.registry import default_registry
from schemas.params import JobParams

stage, size, model_ref = sys.argv[1], int(sys.argv[2]), sys.argv[3] or None

def png(side):
    rng = np.random.default_rng(0)
    grey = (rng.random((side, side)) * 255).astype(np.uint8)
    buf = io.BytesIO(); Image.fromarray(grey).save(buf, format="PNG"); return buf.getvalue()

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux

class Stages:
    # peak RSS per pipeline stage: a thread samples /proc/self/statm, the pipeline's
    # progress callback says which stage runs
    def __init__(self):
        self.current, self.peaks, self.stop = "decode", {}, False
        self.thread = threading.Thread(target=self.sample, daemon=True)
    def rss(self):
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096
    def sample(self):
        while not self.stop:
            self.mark()
            time.sleep(0.0005)
    def mark(self):
        self.peaks[self.current] = max(self.peaks.get(self.current, 0), self.rss())
    def __call__(self, name, fraction):
        self.mark(); self.current = name; self.mark()

registry = default_registry()
info = registry.get(model_ref)
limits = DecodeLimits(1 << 30, 1 << 16, 1 << 30)
small, data = png(64), png(size)
params = JobParams()
if stage == "worker":
    pin_mmap_threshold()  # as workers.runtime.start does
    model = registry.load(info.id)
    warm_up(model, info)
    fit_heap(64 * 64)  # before each job, as workers.tasks does
    run_prepared(model, prepare_inputs(info, params, RawInput(small, "s.png", "image/png"), None, limits))
    base = peak()
    stages = Stages(); stages.thread.start()
    inputs = prepare_inputs(info, params, RawInput(data, "x.png", "image/png"), None, limits)
    fit_heap(size * size)
    run_prepared(model, inputs, progress=stages)
    stages.current = "end"; stages.mark(); stages.stop = True; stages.thread.join()
    print(json.dumps({"stages": {k: v - base for k, v in stages.peaks.items()}}))
else:
    prepare_inputs(info, params, RawInput(small, "s.png", "image/png"), None, limits)
    base = peak()
    prepare_inputs(info, params, RawInput(data, "x.png", "image/png"), None, limits)
print(json.dumps({"stage": stage, "size": size, "base": base, "peak": peak()}))
"""


def measure(stage: str, size: int, model: str | None) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if stage == "worker":
        env.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as workers set it (lrpseg.heap.use_huge_pages)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, stage, str(size), model or ""],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = out.stdout.strip().splitlines()
    row = json.loads(lines[-1])
    stages = json.loads(lines[-2])["stages"] if len(lines) > 1 else {}
    grown = max(0, row["peak"] - row["base"])
    per_stage = {k: max(0, v) / (size * size) for k, v in stages.items()}
    return {**row, "grown": grown, "bytes_per_pixel": grown / (size * size), "stage_bytes_per_pixel": per_stage}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--stages", nargs="+", default=["api", "worker"], choices=["api", "worker"])
    parser.add_argument("--model", help="model id (default: the registry's default)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows = []
    print(f"{'stage':<7}{'size':>7}{'peak growth MiB':>17}{'bytes/pixel':>13}")
    for stage in args.stages:
        for size in args.sizes:
            row = measure(stage, size, args.model)
            rows.append(row)
            print(f"{stage:<7}{size:>7}{row['grown'] / 2**20:>17.1f}{row['bytes_per_pixel']:>13.0f}", flush=True)
            if row["stage_bytes_per_pixel"]:
                parts = "  ".join(f"{k} {v:.0f}" for k, v in row["stage_bytes_per_pixel"].items())
                print(f"{'':<7}peak B/px by stage (RSS over baseline, sampled): {parts}", flush=True)
    print(f"load average {[round(x, 2) for x in os.getloadavg()]}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
