"""Time one volume job, stage by stage: NIfTI decode, forward, LRP, masks (5x5x5), render.

    .venv/bin/python benchmarks/volume_job.py [--sizes 32 64] [--repeats 3] [--threads 2] [--bits 32]

A random 3-D U-Net (depth 3, width 8, BN, transposed convs; head bias shifted so ~15 % of the
voxels are "defect") explains a cube of side S with the default params (the default composite,
four masks, every artifact). The cube is uniform noise, float32 (--bits 32: every voxel
distinct) or on 2^bits levels (--bits 12: a CT's integer values, as the median sees them). Also times a plain gradient (forward + backward to the input) on the same
model and input, the reference LRP is measured against. Prints medians of `--repeats` runs.
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from lrpseg.io import decode_image
from lrpseg.models import UNet, UNetConfig
from lrpseg.pipeline import run_job
from lrpseg.registry import save_model_dir
from schemas.params import JobParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bits", type=int, default=32, help="levels of the voxel values (32: float)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = UNet(UNetConfig(depth=3, base_width=8, spatial_dims=3)).eval()
    folder = Path(tempfile.mkdtemp())
    config = {"name": "bench3d", "version": "1", "kind": "segmenter", "architecture": model.config.to_dict()}
    print(f"load average {os.getloadavg()[0]:.2f}, {args.threads} torch threads")
    print("side | voxels | decode | forward | lrp | masks | render | job total | gradient | lrp / gradient")
    for side in args.sizes:
        volume = np.random.default_rng(side).random((side, side, side)).astype(np.float32)
        if args.bits < 32:
            volume = (np.round(volume * (2**args.bits - 1)) / (2**args.bits - 1)).astype(np.float32)
        x = torch.from_numpy(volume)[None, None]
        with torch.no_grad():
            logits = model(x)[0]
            model.head.bias[1] -= torch.quantile((logits[1] - logits[0]).flatten(), 0.85)
        info = save_model_dir(folder / f"bench{side}", model, config)
        data = gzip.compress(nib.Nifti1Image(volume, np.eye(4)).to_bytes())
        rows: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            start = time.perf_counter()
            image = decode_image(data)
            rows.setdefault("decode", []).append((time.perf_counter() - start) * 1000)
            timings = run_job(model, info, image, JobParams()).result["timings"]
            for key in ("forward", "lrp", "masks", "render", "total"):
                rows.setdefault(key, []).append(timings[key])
            xg = x.clone().requires_grad_()
            start = time.perf_counter()
            torch.autograd.grad(model(xg)[:, 1].sum(), xg)
            rows.setdefault("gradient", []).append((time.perf_counter() - start) * 1000)
        med = {k: statistics.median(v) for k, v in rows.items()}
        cells = [f"{med[k]:.0f} ms" for k in ("decode", "forward", "lrp", "masks", "render", "total", "gradient")]
        ratio = (med["forward"] + med["lrp"]) / med["gradient"]
        print(f"{side}³ | {side**3} | " + " | ".join(cells) + f" | {ratio:.2f}")


if __name__ == "__main__":
    main()
