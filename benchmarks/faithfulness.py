"""Which explanation is faithful, conserved and local? One table, method x metric, on held-out images.

Run: PYTHONPATH=. python benchmarks/faithfulness.py [--n 24 --size 128 --steps 10] [--ledger]

Images: the first `--n` defective images of the project's test split (seeds the shipped
U-Net never trained on) on which `unet-defects@1` predicts at least one defect pixel,
generated at `--size`. Explained output: Σ logits x mask of the defect class over its
predicted pixels (the job default). Per method and image:

- deletion / insertion / difference: pixel-level curves (lrpseg.metrics.faithfulness,
  `--steps` + 1 points, mean fill); deletion small, insertion large, difference large = faithful;
- conservation: Σ R / Σ r_out (LRP only);
- mass inside: positive relevance inside the true defect / all positive relevance;
- pointing: the most relevant pixel lies on the true defect.

`--ledger` prints instead, per LRP composite, the median conservation, bias share and
stabiliser share (and the worst |sum - 1| of the three), mass inside and pointing — no curves.

Rows: the LRP composites, Seg-Grad-CAM and Seg-HiRes-Grad-CAM at their default layer
(the last full-resolution decoder map), Seg-Grad-CAM at the bottleneck (the old default), the
plain input gradient and a random order. Means over images; conservation is the median.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from lrpseg.data import DefectDatasetConfig, generate_split, stack_samples
from lrpseg.lrp import explain, seg_grad_cam
from lrpseg.lrp.targets import predicted_class_mask
from lrpseg.metrics.explanation import explanation_metrics
from lrpseg.metrics.faithfulness import Order, deletion_insertion, input_gradient
from lrpseg.registry import SHIPPED_DIR, Registry

LRP_ROWS = (
    "conserving-reference",
    "conserving",
    "conserving-local",
    "ours",
    "montavon",
    "epsilon-gamma-box",
    "epsilon-gamma-reference",
    "epsilon-plus-flat",
)
BOTTLENECK = "bottleneck.5"  # the 10x10 map seed 004 / the old default used


def _number(value: float | list[float]) -> float:
    assert isinstance(value, float)
    return value


def held_out(
    model: nn.Module, normalize: Callable[[Tensor], Tensor], n: int, size: int, start: int = 0
) -> list[tuple[Tensor, Tensor]]:
    """(x (1, 1, H, W) model input, true defect mask (H, W) bool) for n defective test images with a
    prediction, from test sample `start` on."""
    found: list[tuple[Tensor, Tensor]] = []
    while len(found) < n:
        samples = [s for s in generate_split("test", 64, DefectDatasetConfig(size=size), start=start) if s.label]
        start += 64
        if not samples:
            continue
        images, masks, _ = stack_samples(samples)
        x = normalize(images)
        with torch.no_grad():
            predicted = model(x).argmax(1) == 1
        found += [(x[i : i + 1], masks[i] > 0) for i in range(len(samples)) if bool(predicted[i].any())]
    return found[:n]


def maps(model: nn.Module, x: Tensor, bounds: tuple[float, float]) -> dict[str, tuple[Tensor, float | None]]:
    """{row: ((H, W) map, conservation or None)} for one image."""
    with torch.no_grad():
        mask = predicted_class_mask(model(x), 1)
    out: dict[str, tuple[Tensor, float | None]] = {}
    for name in LRP_ROWS:
        e = explain(model, x, target="class", cls=1, rules=name, bounds=bounds)
        out[name] = (e.relevance[0].sum(0), float(e.conservation[0]))
    variants: tuple[tuple[Literal["grad", "hires"], str], ...] = (
        ("grad", "seg-grad-cam"),
        ("hires", "seg-hires-grad-cam"),
    )
    for variant, label in variants:
        out[label] = (seg_grad_cam(model, x, mask, variant=variant)[0], None)
    out["seg-grad-cam @bottleneck"] = (seg_grad_cam(model, x, mask, layer=BOTTLENECK)[0], None)  # the old default
    out["gradient"] = (input_gradient(model, x, lambda o: (o * mask).flatten(1).sum(1))[0].sum(0), None)
    return out


def table(model: nn.Module, data: list[tuple[Tensor, Tensor]], bounds: tuple[float, float], steps: int) -> dict:
    rows: dict[str, dict[str, list[float]]] = {}
    for index, (x, truth) in enumerate(data):
        with torch.no_grad():
            mask = predicted_class_mask(model(x), 1)

        def score(output: Tensor, mask: Tensor = mask) -> Tensor:
            return (output * mask).flatten(1).sum(1)

        found = maps(model, x, bounds)
        found["random"] = (torch.zeros(x.shape[2:]), None)
        for name, (relevance, conservation) in found.items():
            order: Order = "random" if name == "random" else "relevance"
            curves = deletion_insertion(
                model, x, relevance, score, steps=steps, batch_size=2 * steps + 2, order=order, seed=index
            )
            row = rows.setdefault(name, {})
            for key in ("deletion_auc", "insertion_auc", "difference"):
                row.setdefault(key, []).append(curves[key])
            if conservation is not None:
                row.setdefault("conservation", []).append(conservation)
            if name != "random":
                m = explanation_metrics(relevance.detach().numpy(), truth.numpy())
                row.setdefault("mass", []).append(_number(m["relevance_mass_accuracy"]))
                row.setdefault("pointing", []).append(_number(m["pointing_game"]))
    return rows


def ledger(model: nn.Module, data: list[tuple[Tensor, Tensor]], bounds: tuple[float, float]) -> None:
    """Per LRP composite: where Σ r_out goes (medians) and how local the map is (means); no curves."""
    print(
        f"| composite (n={len(data)}) | conservation (p10–p90) | bias share | stabiliser share "
        "| max abs(sum − 1) | mass inside | pointing |"
    )
    print("|" + "---|" * 7)
    for name in LRP_ROWS:
        cons, bias, stab, mass, pointing = [], [], [], [], []
        for x, truth in data:
            e = explain(model, x, target="class", cls=1, rules=name, bounds=bounds)
            cons.append(float(e.conservation[0]))
            bias.append(float(e.bias_share[0]))
            stab.append(float(e.stabilizer_share[0]))
            m = explanation_metrics(e.relevance[0].sum(0).numpy(), truth.numpy())
            mass.append(_number(m["relevance_mass_accuracy"]))
            pointing.append(_number(m["pointing_game"]))
        worst = float(np.max(np.abs(np.array(cons) + np.array(bias) + np.array(stab) - 1)))
        print(
            f"| {name} | {np.median(cons):.3f} ({np.percentile(cons, 10):.2f}–{np.percentile(cons, 90):.2f}) | "
            f"{np.median(bias):.3f} | {np.median(stab):.3f} | {worst:.0e} | {np.mean(mass):.3f} | "
            f"{np.mean(pointing):.3f} |"
        )


def print_table(rows: dict, n: int) -> None:
    head = f"| method (n={n}) | deletion ↓ | insertion ↑ | difference ↑ | conservation | mass inside | pointing |"
    print(head)
    print("|" + "---|" * 7)
    for name, row in rows.items():

        def mean(key: str, row: dict[str, list[float]] = row) -> str:
            return f"{np.mean(row[key]):.3f}" if key in row else "–"

        cons = f"{np.median(row['conservation']):.3f}" if "conservation" in row else "–"
        print(
            f"| {name} | {mean('deletion_auc')} | {mean('insertion_auc')} | {mean('difference')} | {cons} | "
            f"{mean('mass')} | {mean('pointing')} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=24, help="defective test images")
    parser.add_argument("--size", type=int, default=128, help="image side (the shipped U-Net trained at 128)")
    parser.add_argument("--steps", type=int, default=10, help="curve points - 1")
    parser.add_argument("--start", type=int, default=0, help="first test sample (0: the images of the tables)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ledger", action="store_true", help="only the LRP composites' shares, no curves (fast)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    registry = Registry([SHIPPED_DIR])
    info = registry.get("unet-defects@1")
    bounds = (float(info.zbox_bounds[0]), float(info.zbox_bounds[1]))
    model = registry.load("unet-defects@1")
    start = time.perf_counter()
    data = held_out(model, info.normalize, args.n, args.size, args.start)
    if args.ledger:
        ledger(model, data, bounds)
    else:
        print_table(table(model, data, bounds, args.steps), len(data))
    curves = "" if args.ledger else f"{args.steps + 1}-point curves, "
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"\n{len(data)} images at {args.size}² from test sample {args.start}, {curves}{args.threads} threads, "
        f"{time.perf_counter() - start:.0f} s, load average {load}"
    )


if __name__ == "__main__":
    main()
