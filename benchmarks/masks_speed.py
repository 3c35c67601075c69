"""Time the four mask extractors (and the pictures) on LRP-like maps at 256² and 512².

    .venv/bin/python benchmarks/masks_speed.py [--repeats 7] [--sizes 256 512] [--lrp] [--threads 1]

Each extractor alone checks, scales, filters and sorts the map itself; "all four" is what a job
runs (masks.extract_all: that work once, shared).

--lrp also times one whole-output LRP explanation of a depth-4, width-16 U-Net
at each size, the cost the extractors must stay well under. Prints medians (and
minima: on a shared machine the minimum is the better estimate of the cost).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from lrpseg.masks import EXTRACTORS, bmm, component, extract_all, gmm, simple
from lrpseg.masks.synthetic import lrp_like_map
from lrpseg.metrics import pr_curve, segmentation_metrics
from lrpseg.render import colorbar_png, overlay_png, relevance_png


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    fn()  # warm-up: imports, caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def lrp_seconds(size: int, repeats: int) -> tuple[float, float]:
    import torch

    from lrpseg.lrp import explain
    from lrpseg.models import UNet, UNetConfig

    torch.manual_seed(0)
    model = UNet(UNetConfig(in_channels=1, num_classes=2, depth=4, base_width=16)).eval()
    x = torch.rand(1, 1, size, size)
    return timed(lambda: explain(model, x, target="class", cls=1), repeats)


def steps(size: int) -> dict[str, Callable[[], Any]]:
    """What is timed at one size, on the same LRP-like map."""
    relevance, truth = lrp_like_map((size, size), seed=0)
    results = {name: fn(relevance) for name, fn in (("simple", simple), ("gmm", gmm), ("bmm", bmm))}
    image = np.zeros((1, size, size), np.uint16)
    return {
        "simple": lambda: simple(relevance),
        "gmm": lambda: gmm(relevance),
        "bmm": lambda: bmm(relevance),
        "component": lambda: component(relevance),
        "colorbar_png (labelled)": lambda: colorbar_png(10.0, tau=0.1, mass=0.9),
        "all four (extract_all)": lambda: extract_all(EXTRACTORS, relevance),
        "metrics (3 masks)": lambda: [segmentation_metrics(r.mask, truth) for r in results.values()],
        "pr curves (2 scores)": lambda: [pr_curve(results[n].score, truth) for n in ("gmm", "bmm")],
        "relevance_png": lambda: relevance_png(relevance),
        "overlay_png (16-bit)": lambda: overlay_png(image, relevance),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--lrp", action="store_true", help="also time one LRP explanation per size")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a worker's share of the cores)")
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    print(f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.2f} repeats={args.repeats}")
    print(f"{'size':>6} {'step':<24} {'median ms':>10} {'min ms':>8}")
    for size in args.sizes:
        for name, fn in steps(size).items():
            median, best = timed(fn, args.repeats)
            print(f"{size:>6} {name:<24} {median * 1e3:>10.1f} {best * 1e3:>8.1f}")
        if args.lrp:
            median, best = lrp_seconds(size, max(1, args.repeats // 3))
            print(f"{size:>6} {'LRP explain (U-Net)':<24} {median * 1e3:>10.1f} {best * 1e3:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
