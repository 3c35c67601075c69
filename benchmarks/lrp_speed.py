"""LRP speed: our single-sweep engine vs zennit vs a plain gradient, measured in one run.

Usage: python benchmarks/lrp_speed.py [--sizes 256 512] [--repeats 5] [--device cpu|cuda] [--threads 2]
       python benchmarks/lrp_speed.py --family monai-unet|monai-unet-3d|smp-unet-resnet34 [--sizes 256]
           [--composites epsilon ours] [--repeats 3]

--family picks the network: our U-Net (default "unet"), a MONAI UNet (channels 16..256,
strides 2, two residual units, InstanceNorm + PReLU; 2-D or 3-D) or an smp Unet with a
resnet34 encoder (random weights, BN folded). zennit runs on the same traced, BN-folded
graph with the same layer->rule map; on networks with InstanceNorm or functional adds
zennit treats those by the plain gradient, so its relevance differs (the diff column says
by how much) and its time is that of a different explanation.

For each size: forward time, plain gradient (forward + backward to the input) of the model
as given and of the model in channels-last (the layout our prepared sweep runs its 2-D
convolutions in, so `ours/gradCL` compares like with like),
our time and zennit's for the same composite on the same BN-folded network and
the same layer->rule map, their ratios, the max relative difference of the two
relevance maps, and the peak memory of each method (CUDA: allocator peak; CPU:
peak RSS growth, sampled).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # before torch allocates, as workers do (lrpseg.heap.use_huge_pages)

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.lrpseg.lrp.zennit_bridge

from lrpseg import lrp
from lrpseg.heap import fit_heap
from lrpseg.models import UNet, UNetConfig

COMPOSITES = ("montavon", "ours", "epsilon-gamma-box", "conserving-local", "conserving-reference")


class PeakMemory:
    """Peak memory growth during a block: CUDA allocator peak, or sampled RSS on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0

    def _rss(self) -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base, self._stop = self._rss(), False
            self.peak_rss = self.base
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop:
            self.peak_rss = max(self.peak_rss, self._rss())
            time.sleep(0.0005)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self._stop = True
            self._thread.join()
            self.peak = self.peak_rss - self.base


def timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _zbox_at(rule: lrp.Rule, x: torch.Tensor) -> lrp.Rule:
    """A ReferenceBox as zennit's ZBox with its per-pixel bounds at x (the first layer's input)."""
    from lrpseg.lrp.reference_box import ReferenceBox

    return lrp.ZBox(*rule.bounds(x), rule.stabilizer) if isinstance(rule, ReferenceBox) else rule


def zennit_call(model: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor, composite: str, bounds):
    """zennit with the same folded network and rule map (built-in EpsilonGammaBox for that name)."""
    import zennit.rules as zr
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonGammaBox, NameMapComposite

    from tests.lrpseg.lrp.zennit_bridge import to_zennit

    prepared = lrp.prepare(model)

    def composite_for() -> EpsilonGammaBox | NameMapComposite:
        if composite == "epsilon-gamma-box":
            return EpsilonGammaBox(low=bounds[0], high=bounds[1])
        rules = prepared.resolve(composite, bounds)
        name_map = [((n,), to_zennit(_zbox_at(r, x))) for n, r in rules.items()]
        name_map += [((i.name,), zr.Pass()) for i in prepared.infos.values() if i.kind.value == "pass" and i.module]
        name_map += [((i.name,), zr.Norm()) for i in prepared.infos.values() if i.kind.value == "norm" and i.module]
        return NameMapComposite(name_map=name_map)

    def run() -> torch.Tensor:
        comp = composite_for()  # in the timing: a ReferenceBox's bounds (its median filter) are made here
        with Gradient(model=prepared.gm, composite=comp) as attributor:
            return attributor(x.clone(), lambda out: out * mask)[1]

    return run


FAMILIES = {
    "monai-unet": {"family": "monai", "class": "UNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 2,
                   "channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2},
    "monai-unet-3d": {"family": "monai", "class": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2,
                      "channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 2},
    "smp-unet-resnet34": {"family": "segmentation_models_pytorch", "class": "Unet", "encoder_name": "resnet34",
                          "in_channels": 1, "classes": 2},
}  # fmt: skip


def build(family: str, width: int) -> tuple[torch.nn.Module, int, int, str]:
    """(model, in_channels, spatial dims, description)."""
    if family == "unet":
        model = UNet(UNetConfig(in_channels=1, num_classes=2, depth=4, base_width=width))
        return model, 1, 2, f"U-Net depth 4, base width {width}, BatchNorm (folded)"
    from lrpseg.models import build_model
    from lrpseg.models.families import Logits

    arch = FAMILIES[family]
    return Logits(build_model(arch)), 1, int(arch.get("spatial_dims", 2)), f"{family}: {arch}"


def bench_size(
    model,
    size: int,
    device: torch.device,
    repeats: int,
    channels: int = 1,
    dims: int = 2,
    composites=COMPOSITES,
    stat: str = "median",
) -> list[dict]:
    x = torch.rand(1, channels, *(size,) * dims, device=device) * 4 - 2
    bounds = (-2.0, 2.0)
    with torch.no_grad():
        logits = model(x)
    mask = torch.zeros_like(logits)
    mask[:, 1] = 1.0  # explain the whole output of class 1

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def gradient() -> None:
        xg = x.clone().requires_grad_()
        out = model(xg)
        torch.autograd.grad(out, xg, mask)

    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last) if dims == 2 else model
    x_cl = x.contiguous(memory_format=torch.channels_last) if dims == 2 else x

    def gradient_cl() -> None:  # the same gradient with the model in channels-last (what our sweep uses)
        xg = x_cl.clone().requires_grad_()
        out = model_cl(xg)
        torch.autograd.grad(out, xg, mask)

    methods: dict[str, Callable[[], object]] = {"forward": forward, "gradient": gradient, "gradient_cl": gradient_cl}
    for comp in composites:
        methods[f"ours:{comp}"] = lambda c=comp: lrp.propagate(model, x, lambda out: out * mask, rules=c, bounds=bounds)
        methods[f"zennit:{comp}"] = zennit_call(model, x, mask, comp, bounds)
    for fn in methods.values():  # warm up (also prepares the engine once)
        fn()
    times: dict[str, list[float]] = {k: [] for k in methods}
    for _ in range(repeats):  # interleaved, so load changes hit every method alike
        for name, fn in methods.items():
            times[name].append(timed(fn, device))
    peaks = {}
    for name, fn in methods.items():
        with PeakMemory(device) as pm:
            fn()
        peaks[name] = pm.peak
    pick = min if stat == "min" else statistics.median
    med = {k: pick(v) for k, v in times.items()}
    rows = []
    for comp in composites:
        ours = lrp.propagate(model, x, lambda out: out * mask, rules=comp, bounds=bounds)
        theirs = methods[f"zennit:{comp}"]()
        diff = float((ours - theirs).abs().max() / theirs.abs().max())
        rows.append(
            dict(
                size=size,
                composite=comp,
                forward_ms=med["forward"] * 1e3,
                gradient_ms=med["gradient"] * 1e3,
                gradient_cl_ms=med["gradient_cl"] * 1e3,
                ours_vs_gradient_cl=med[f"ours:{comp}"] / med["gradient_cl"],
                ours_ms=med[f"ours:{comp}"] * 1e3,
                zennit_ms=med[f"zennit:{comp}"] * 1e3,
                ours_vs_gradient=med[f"ours:{comp}"] / med["gradient"],
                zennit_vs_ours=med[f"zennit:{comp}"] / med[f"ours:{comp}"],
                max_rel_diff=diff,
                peak_ours_mb=peaks[f"ours:{comp}"] / 2**20,
                peak_zennit_mb=peaks[f"zennit:{comp}"] / 2**20,
                peak_gradient_mb=peaks["gradient"] / 2**20,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--stat", choices=["median", "min"], default="median", help="min: best of the repeats (for a busy machine)"
    )
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--family", choices=["unet", *FAMILIES], default="unet")
    parser.add_argument("--composites", nargs="+", choices=list(lrp.COMPOSITES), default=list(COMPOSITES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model, channels, dims, what = build(args.family, args.width)
    model = model.eval().to(device)
    print(
        f"{what}, float32, device {device}, threads {args.threads}, {args.stat} of {args.repeats}, "
        f"load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}"
    )
    header = (
        f"{'size':>5} {'composite':<20} {'fwd ms':>8} {'grad ms':>8} {'gradCL ms':>9} {'ours ms':>8} {'zennit ms':>9} "
        f"{'ours/grad':>9} {'ours/gradCL':>11} {'zennit/ours':>11} {'max rel diff':>12} {'peak MB ours/zennit/grad':>25}"
    )
    print(header)
    for size in args.sizes:
        fit_heap(size**dims)  # the heap a worker gives a job of this size, for every method alike
        for r in bench_size(model, size, device, args.repeats, channels, dims, args.composites, args.stat):
            print(
                f"{r['size']:>5} {r['composite']:<20} {r['forward_ms']:>8.1f} {r['gradient_ms']:>8.1f} "
                f"{r['gradient_cl_ms']:>9.1f} {r['ours_ms']:>8.1f} {r['zennit_ms']:>9.1f} {r['ours_vs_gradient']:>9.2f} "
                f"{r['ours_vs_gradient_cl']:>11.2f} "
                f"{r['zennit_vs_ours']:>11.2f} {r['max_rel_diff']:>12.1e} "
                f"{r['peak_ours_mb']:>9.0f}/{r['peak_zennit_mb']:.0f}/{r['peak_gradient_mb']:.0f}"
            )


if __name__ == "__main__":
    main()
