"""A whole job against a plain gradient of the same model, interleaved image by image (CPU, 1 thread).

    .venv/bin/python benchmarks/job_vs_gradient.py [--size 256] [--n 12] [--bits 8]

Prints the median job / gradient ratio, (forward + LRP) / gradient, the masks' share of the job's
compute and the stage split: the ratios of issue 16's targets, measured within one run. Runs on
older checkouts too (without the PNG pool), for before/after figures. --bits 8 / 16 quantises the
generated images as an 8- / 16-bit PNG upload is (the local median of conserving-reference is
fastest on few distinct values); --bits 32 keeps them float32, as an .npy upload. The gradient
and the jobs run on the heap a worker gives a job of this size (lrpseg.heap.fit_heap; a checkout
before it: the pinned threshold its workers set), with PyTorch's huge pages on as in a worker.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # before torch allocates, as workers do (lrpseg.heap.use_huge_pages)

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lrpseg.data import DefectDatasetConfig, generate_sample
from lrpseg.io import DecodedImage
from lrpseg.pipeline import run_job, warm_up
from lrpseg.registry import default_registry
from schemas.params import JobParams

STAGES = ("forward", "lrp", "masks", "metrics", "render")


def as_upload(image: np.ndarray, bits: int) -> DecodedImage:
    """A generated [0, 1] image as the decoder hands over an upload of that bit depth."""
    pixels = image.astype(np.float32)
    if bits < 32:
        top = float(2**bits - 1)
        pixels = (np.round(pixels * top) / top).astype(np.float32)
    return DecodedImage(pixels[None], "png" if bits < 32 else "npy", bits, 1, *image.shape)


def fit_worker_heap(pixels: int) -> None:
    """The heap a worker runs a job of `pixels` on, in this checkout."""
    try:
        from lrpseg.heap import fit_heap
    except ImportError:  # before per-job heaps
        from lrpseg.heap import pin_mmap_threshold

        pin_mmap_threshold()
    else:
        fit_heap(pixels)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--bits", type=int, choices=[8, 16, 32], default=8)
    args = parser.parse_args(argv)
    size = args.size
    torch.set_num_threads(1)
    fit_worker_heap(size * size)
    registry = default_registry()
    info, model = registry.get(), registry.load()
    images, seed = [], 0
    while len(images) < args.n:
        sample = generate_sample(seed, DefectDatasetConfig(size=size))
        seed += 1
        if sample.label == 1:
            images.append(as_upload(sample.image, args.bits))
    warm_up(model, info)
    kw: dict[str, Any] = {}
    try:
        from lrpseg.render.encoding import PngEncoder

        kw["encoder"] = PngEncoder(2)
    except ImportError:  # a checkout before the PNG pool
        pass
    params = JobParams()
    run_job(model, info, images[0], params, **kw)
    rows = []
    for image in images:
        x = info.normalize(torch.from_numpy(image.array)[None])
        start = time.perf_counter()
        model(x.clone().requires_grad_(True)).sum().backward()
        g = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        timings = run_job(model, info, image, params, **kw).result["timings"]
        rows.append((g, (time.perf_counter() - start) * 1000, timings))
    st = {k: statistics.median(r[2].get(k, 0) for r in rows) for k in STAGES}
    print(
        f"{size}² {args.bits}-bit n={args.n}: median job/gradient {statistics.median(j / g for g, j, _ in rows):.2f}x "
        f"(gradient {statistics.median(r[0] for r in rows):.1f} ms, job {statistics.median(r[1] for r in rows):.1f} ms); "
        f"LRP(fwd+lrp)/gradient {statistics.median((t['forward'] + t['lrp']) / g for g, _, t in rows):.2f}x; "
        f"masks share {statistics.median(t['masks'] / sum(t.get(k, 0) for k in STAGES) for _, _, t in rows):.1%}; "
        "split ms " + ", ".join(f"{k} {v:.1f}" for k, v in st.items())
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
