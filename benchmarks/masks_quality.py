"""How well LRP-derived masks find the defect, and how many pixels the default picture colours.

    .venv/bin/python benchmarks/masks_quality.py [--n 240] [--start 640] [--threads 1]

On the U-Net `unet-defects@1` and held-out generated images (test split, samples
start .. start+n, at the size its card was measured with; defective images only):

- the U-Net's own segmentation vs the true defect (IoU, precision, recall, pooled over
  all pixels of the defective images);
- the masks of every extractor (seed 001's simple/gmm/bmm and component) from the
  LRP of the predicted defect pixels, per rule set, against the true defect, and the
  best one's IoU as a multiple of the U-Net's;
- pictures: the share of pixels the log transfer colours with seed 000's median rule
  (the old default) and with the cumulative-mass rule (90 %, 95 %), and the share of
  |R| within 4 px of the true defect.

The component parameters were chosen on samples 400-640 of the test split; the default
--start 640 reports on images they were not chosen on.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from lrpseg.data import DefectDatasetConfig, generate_split, stack_samples
from lrpseg.lrp import explain, prepare
from lrpseg.lrp.composites import rule_map
from lrpseg.lrp.rules import Gamma, ZBox
from lrpseg.masks import EXTRACTORS, extract
from lrpseg.metrics import segmentation_metrics
from lrpseg.registry import SHIPPED_DIR, Registry
from lrpseg.render import coloured_share, resolve_tau

MODEL = "unet-defects@1"
RULE_SETS = (
    "conserving-reference",
    "ours",
    "epsilon-gamma-box",
    "epsilon-gamma-box, first conv gamma(1)",
    "epsilon-gamma-reference",
)
NEAR_PX = 4.0


def rules_for(name: str, model: torch.nn.Module, bounds: tuple[float, float]) -> Any:
    """A composite name, or epsilon-gamma-box with the first conv's z^B rule replaced by gamma(1):
    what a user gets with params {"lrp": {"composite": "epsilon-gamma-box", "rules": {<first conv>:
    {"rule": "gamma", "gamma": 1}}}}."""
    if "," not in name:
        return name
    rules = rule_map("epsilon-gamma-box", prepare(model).infos, bounds)
    first = next(n for n, r in rules.items() if isinstance(r, ZBox))
    return {**rules, first: Gamma(1.0)}


def relevance_maps(model: torch.nn.Module, x: torch.Tensor, rules: Any, bounds: tuple[float, float]) -> np.ndarray:
    parts = []
    for i in range(0, len(x), 20):
        e = explain(model, x[i : i + 20], target="class", cls=1, rules=rules, bounds=bounds)
        parts.append(e.relevance.sum(1).detach().double().numpy())
    return np.concatenate(parts)


def row(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    m = segmentation_metrics(pred, truth)
    return {"iou": m["iou"], "precision": m["precision"], "recall": m["recall"], "share": float(pred.mean())}


def picture_shares(maps: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Median over images of the coloured share per threshold rule, and of |R| near the defect."""
    rules = {"median |R| (seed 000, old default)": {"percentile": 50.0}, "mass 0.90 (default)": {"mass": 0.9},
             "mass 0.95": {"mass": 0.95}}  # fmt: skip
    out: dict[str, float] = {}
    live = [i for i in range(len(maps)) if np.abs(maps[i]).max() > 0]
    for label, kw in rules.items():
        out[label] = float(np.median([coloured_share(maps[i], resolve_tau(maps[i], **kw)) for i in live]))
    near = [np.abs(maps[i])[distance_transform_edt(~truth[i]) <= NEAR_PX].sum() / np.abs(maps[i]).sum() for i in live]
    out[f"|R| within {NEAR_PX:g} px of the defect"] = float(np.median(near))
    out["defect pixel share"] = float(np.median(truth[live].mean(axis=(1, 2))))
    return out


def measure(n: int, start: int) -> dict[str, Any]:
    registry = Registry([SHIPPED_DIR])
    info, model = registry.get(MODEL), registry.load(MODEL)
    config = DefectDatasetConfig.from_dict(info.evaluation["data"])
    images, masks, labels = stack_samples(generate_split("test", n, config, start=start))
    keep = labels == 1
    images, truth = images[keep], masks[keep].numpy().astype(bool)
    x = info.normalize(images)
    with torch.inference_mode():
        pred = (model(x).argmax(1) == 1).numpy()
    unet = row(pred, truth)
    results: dict[str, Any] = {"images": int(keep.sum()), "size": config.size, "unet": unet, "rules": {}}
    for name in RULE_SETS:
        started = time.perf_counter()
        maps = relevance_maps(model, x, rules_for(name, model, info.zbox_bounds), info.zbox_bounds)
        masks_rows = {e: row(np.stack([extract(e, m).mask for m in maps]), truth) for e in EXTRACTORS}
        best = max(masks_rows, key=lambda e: masks_rows[e]["iou"])
        results["rules"][name] = {
            "masks": masks_rows,
            "best": best,
            "best_vs_unet": masks_rows[best]["iou"] / unet["iou"],
            "pictures": picture_shares(maps, truth),
            "seconds": time.perf_counter() - started,
        }
    return results


def report(results: dict[str, Any]) -> str:
    u = results["unet"]
    lines = [
        f"{results['images']} defective held-out images at {results['size']} px; "
        f"U-Net: IoU {u['iou']:.3f}, precision {u['precision']:.3f}, recall {u['recall']:.3f}",
        "",
        "| rules | mask | IoU | precision | recall | pixels marked | IoU / U-Net IoU |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results["rules"].items():
        for e, m in r["masks"].items():
            lines.append(f"| {name} | {e}{' (best)' if e == r['best'] else ''} | {m['iou']:.3f} | "
                         f"{m['precision']:.3f} | {m['recall']:.3f} | {m['share']:.4f} | {m['iou'] / u['iou']:.2f} |")  # fmt: skip
    lines += ["", "Pictures: median share of pixels coloured, per threshold rule", "",
              "| rules | " + " | ".join(next(iter(results["rules"].values()))["pictures"]) + " |",
              "| --- |" + " --- |" * len(next(iter(results["rules"].values()))["pictures"])]  # fmt: skip
    for name, r in results["rules"].items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in r["pictures"].values()) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=240, help="test samples (about half are defective)")
    parser.add_argument("--start", type=int, default=640, help="first test sample")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"cpus={os.cpu_count()} threads={args.threads} load={os.getloadavg()[0]:.2f} n={args.n} start={args.start}")
    started = time.perf_counter()
    print(report(measure(args.n, args.start)))
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
