"""Reproduce seed 001's magnetic-tile experiments (Tables 2 and 3, Figures 4 and 5) on the synthetic test split.

    .venv/bin/python benchmarks/reproduce_seed001.py [--n-test 400] [--threads 2] [--vgg-version 2]
        [--pr-png docs/reproduce-seed001-pr.png] [--json results.json]

Uses the shipped models (`vgg11-128n-defects@2`, `vgg11-onefc-defects@2` at 192 px,
or the 64-px `@1` heads with --vgg-version 1, and `unet-defects@1`) on the first
`--n-test` samples of the test split, generated with the data settings each model's
config.json records. Prints, beside the paper's values:

- Table 2: balanced accuracy, TPR, TNR of both VGG-11 heads (image-level labels,
  all test images);
- Table 3: IoU, precision, recall of Simple / GMM / BMM masks x rule set (ours,
  montavon) x VGG head (and, not in the paper, the Component extractor), from the LRP of the "defect" logit on the defective test
  images (channel-summed relevance), pooled over all their pixels; and the
  U-Net's own segmentation of the same images (plus, for reference, of its own
  128-px test images);
- average precision of the curves drawn in the PR figure (U-Net probability,
  GMM score, BMM score, raw relevance mapped affinely to [0, 1] per image).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from lrpseg.data import DefectDatasetConfig, generate_split, stack_samples
from lrpseg.lrp import explain
from lrpseg.masks import extract
from lrpseg.metrics import PRCurve, classification_metrics, pr_curve, segmentation_metrics
from lrpseg.metrics.segmentation import curve_points
from lrpseg.registry import SHIPPED_DIR, ModelInfo, Registry
from lrpseg.render.plots import figure_png

DEFAULT_PR_PNG = Path(__file__).resolve().parent.parent / "docs" / "reproduce-seed001-pr.png"

VGG_VERSION = "2"  # 192-px heads; "1" = the 64-px heads


def classifiers(version: str = VGG_VERSION) -> dict[str, str]:
    return {"128N": f"vgg11-128n-defects@{version}", "one FC": f"vgg11-onefc-defects@{version}"}


CLASSIFIERS = classifiers()
SEGMENTER = "unet-defects@1"
RULE_SETS = ("ours", "montavon")
EXTRACTORS = ("simple", "gmm", "bmm")  # seed 001's, in Table 3
EXTRA_EXTRACTORS = ("component",)  # ours, not in the paper
GMM_SEED = 0

# Seed 001, magnetic tiles. Table 2: balanced accuracy, TPR, TNR.
PAPER_TABLE2: dict[str, dict[str, float]] = {
    "128N": {"balanced_accuracy": 0.961, "tpr": 0.957, "tnr": 0.965},
    "one FC": {"balanced_accuracy": 0.985, "tpr": 0.971, "tnr": 0.999},
}
# Table 3: (rules, head, mask) -> IoU, precision, recall.
PAPER_TABLE3: dict[tuple[str, str, str], tuple[float, float, float]] = {
    ("ours", "128N", "simple"): (0.349, 0.352, 0.976),
    ("ours", "128N", "gmm"): (0.129, 0.129, 0.993),
    ("ours", "128N", "bmm"): (0.462, 0.638, 0.679),
    ("ours", "one FC", "simple"): (0.386, 0.404, 0.944),
    ("ours", "one FC", "gmm"): (0.168, 0.169, 0.991),
    ("ours", "one FC", "bmm"): (0.402, 0.669, 0.614),
    ("montavon", "128N", "simple"): (0.466, 0.497, 0.897),
    ("montavon", "128N", "gmm"): (0.216, 0.216, 0.996),
    ("montavon", "128N", "bmm"): (0.332, 0.703, 0.448),
    ("montavon", "one FC", "simple"): (0.425, 0.491, 0.808),
    ("montavon", "one FC", "gmm"): (0.238, 0.246, 0.947),
    ("montavon", "one FC", "bmm"): (0.317, 0.686, 0.470),
}
PAPER_UNET = (0.461, 0.578, 0.699)
PAPER_NO_SKILL = 0.006
METRICS = ("iou", "precision", "recall")
SATURATED = 1.0 - 1e-9  # a mixture score this close to 1 is the GMM plateau of seed 001 §4


@dataclass(frozen=True)
class TestSet:
    """images (N, 1, H, W) float32 in [0, 1]; masks bool (N, H, W); labels int (N,)."""

    images: torch.Tensor
    masks: np.ndarray
    labels: np.ndarray
    config: DefectDatasetConfig

    def defective(self) -> TestSet:
        keep = self.labels == 1
        return TestSet(self.images[torch.from_numpy(keep)], self.masks[keep], self.labels[keep], self.config)


def data_config(info: ModelInfo) -> DefectDatasetConfig:
    """The generator settings the model's test metrics were measured with (its config.json)."""
    data = info.evaluation.get("data")
    if not data:
        raise ValueError(f"model {info.id} records no evaluation data settings in its config.json")
    return DefectDatasetConfig.from_dict(data)


def load_test_set(config: DefectDatasetConfig, n: int) -> TestSet:
    images, masks, labels = stack_samples(generate_split("test", n, config))
    return TestSet(images, masks.numpy().astype(bool), labels.numpy(), config)


@torch.inference_mode()
def logits_of(model: nn.Module, info: ModelInfo, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The model's logits on pixels in [0, 1], in batches."""
    parts = [model(info.normalize(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    return torch.cat(parts)


def relevance_maps(model: nn.Module, info: ModelInfo, images: torch.Tensor, rules: str,
                   batch_size: int) -> np.ndarray:  # fmt: skip
    """Channel-summed LRP relevance of the "defect" logit (class 1), float64 (N, H, W)."""
    parts = []
    for i in range(0, len(images), batch_size):
        x = info.normalize(images[i : i + batch_size])
        expl = explain(model, x, target="class", cls=1, rules=rules, bounds=info.zbox_bounds)
        parts.append(expl.relevance.sum(1).detach().double().numpy())
    return np.concatenate(parts)


def minmax_per_image(maps: np.ndarray) -> np.ndarray:
    """Each map mapped affinely to [0, 1] (a constant map becomes 0)."""
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return (maps - low) / np.where(span > 0, span, 1.0)


def extract_masks(maps: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Per extractor: stacked masks (N, H, W) and scores (N, H, W) (None for Simple)."""
    out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for name in (*EXTRACTORS, *EXTRA_EXTRACTORS):
        results = [extract(name, m, seed=GMM_SEED) for m in maps]
        masks = np.stack([r.mask for r in results])
        scores = None if results[0].score is None else np.stack([r.score for r in results])  # type: ignore[misc]
        out[name] = (masks, scores)
    return out


def seg_row(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Pooled over every pixel of the stack: IoU, precision, recall, predicted positive share."""
    m = segmentation_metrics(pred, ref)
    return {"iou": m["iou"], "precision": m["precision"], "recall": m["recall"], "predicted_share": float(pred.mean())}


def classifier_table(registry: Registry, test: TestSet, batch_size: int,
                     heads: dict[str, str]) -> dict[str, dict[str, Any]]:  # fmt: skip
    table = {}
    for head, ref in heads.items():
        info, model = registry.get(ref), registry.load(ref)
        pred = logits_of(model, info, test.images, batch_size).argmax(1).numpy()
        ours = classification_metrics(test.labels, pred)
        table[head] = {"model": info.id, "ours": ours, "paper": PAPER_TABLE2[head]}
    return table


def lrp_tables(registry: Registry, test: TestSet, batch_size: int,
               heads: dict[str, str]) -> tuple[list[dict[str, Any]], dict[str, PRCurve]]:  # fmt: skip
    """Table 3 rows for every rule set x head x extractor, and the PR curves of the scores."""
    rows: list[dict[str, Any]] = []
    curves: dict[str, PRCurve] = {}
    for rules in RULE_SETS:
        for head, ref in heads.items():
            info, model = registry.get(ref), registry.load(ref)
            maps = relevance_maps(model, info, test.images, rules, batch_size)
            for name, (masks, scores) in extract_masks(maps).items():
                in_paper = PAPER_TABLE3.get((rules, head, name))
                paper = dict(zip(METRICS, in_paper)) if in_paper else None
                ours = seg_row(masks, test.masks)
                if scores is not None and name in EXTRACTORS:
                    curves[f"{rules}/{head}/{name}"] = pr_curve(scores, test.masks)
                    ours["score_one_share"] = float(np.mean(scores >= SATURATED))
                rows.append({"rules": rules, "head": head, "mask": name, "ours": ours, "paper": paper})
            curves[f"{rules}/{head}/raw"] = pr_curve(minmax_per_image(maps), test.masks)
    return rows, curves


def unet_row(registry: Registry, test: TestSet, batch_size: int) -> tuple[dict[str, Any], PRCurve]:
    """The U-Net's argmax segmentation vs the reference, and the PR curve of its defect probability."""
    info, model = registry.get(SEGMENTER), registry.load(SEGMENTER)
    logits = logits_of(model, info, test.images, batch_size)
    prob = torch.softmax(logits.double(), dim=1)[:, 1].numpy()
    pred = (logits.argmax(1) == 1).numpy()
    row = {"model": info.id, "ours": seg_row(pred, test.masks), "paper": dict(zip(METRICS, PAPER_UNET))}
    return row, pr_curve(prob, test.masks)


def reproduce(n_test: int = 400, *, batch_size: int = 50, vgg_version: str = VGG_VERSION) -> dict[str, Any]:
    """Run every experiment on the first n_test test samples; JSON-safe results plus the PR curves."""
    start = time.perf_counter()
    registry = Registry([SHIPPED_DIR])  # the shipped models, whatever $LRPSEG_MODELS_DIR holds
    heads = classifiers(vgg_version)
    vgg_config = data_config(registry.get(heads["128N"]))
    if data_config(registry.get(heads["one FC"])) != vgg_config:
        raise ValueError("the two VGG-11 heads were tested on different data settings")
    test = load_test_set(vgg_config, n_test)
    defective = test.defective()
    if len(defective.labels) == 0 or len(defective.labels) == n_test:
        raise ValueError(f"the first {n_test} test samples need both defective and defect-free images")
    timings: dict[str, float] = {"data": time.perf_counter() - start}

    t = time.perf_counter()
    table2 = classifier_table(registry, test, batch_size, heads)
    timings["classification"] = time.perf_counter() - t

    t = time.perf_counter()
    table3, curves = lrp_tables(registry, defective, batch_size, heads)
    timings["lrp + masks"] = time.perf_counter() - t

    t = time.perf_counter()
    unet_same, curves["unet"] = unet_row(registry, defective, batch_size)
    unet_own_config = data_config(registry.get(SEGMENTER))
    own = load_test_set(unet_own_config, n_test).defective()
    unet_own, _ = unet_row(registry, own, batch_size)
    unet_own["images"] = {"size": unet_own_config.size, "defective": len(own.labels),
                          "positive_share": float(own.masks.mean())}  # fmt: skip
    timings["unet"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start
    return {
        "n_test": n_test,
        "image_size": vgg_config.size,
        "data": vgg_config.to_dict(),
        "defective": len(defective.labels),
        "defect_free": int(n_test - len(defective.labels)),
        "positive_share": float(defective.masks.mean()),
        "table2": table2,
        "table3": table3,
        "unet": unet_same,
        "unet_own_images": unet_own,
        "average_precision": {name: c.average_precision for name, c in curves.items()},
        "highest_cut": {name: top_point(c) for name, c in curves.items()},
        "seconds": timings,
        "curves": curves,
    }


def top_point(curve: PRCurve) -> dict[str, float]:
    """Recall and precision at the highest score cut: where a saturated (score-1) plateau starts."""
    return {"recall": float(curve.recall[-2]), "precision": float(curve.precision[-2])}


def pct(value: float) -> str:
    return f"{100 * value:5.1f}%"


def format_report(results: dict[str, Any]) -> str:
    """The paper's tables side by side with ours, as Markdown tables."""
    lines = [
        (
            f"Synthetic test split: first {results['n_test']} samples at {results['image_size']} px "
            f"({results['defective']} defective, {results['defect_free']} defect-free); "
            f"defect pixel share of the defective images {results['positive_share']:.4f} (paper: {PAPER_NO_SKILL})."
        ),
        "",
        "Table 2 - damage detection (image level, all test images): ours | paper",
        "",
        "| VGG-11 head | balanced accuracy | TPR | TNR |",
        "| --- | --- | --- | --- |",
    ]
    for head, row in results["table2"].items():
        cells = [f"{pct(row['ours'][k])} \\| {pct(row['paper'][k])}" for k in ("balanced_accuracy", "tpr", "tnr")]
        lines.append(f"| {head} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Table 3 - segmentation of the defective test images, pooled over all their pixels: ours | paper",
        "",
        "| rules | VGG-11 head | mask | IoU | precision | recall | predicted share | score = 1 share |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["table3"]:
        paper = row["paper"] or dict.fromkeys(METRICS)
        cells = [f"{row['ours'][k]:.3f} \\| " + ("-" if paper[k] is None else f"{paper[k]:.3f}") for k in METRICS]
        one = row["ours"].get("score_one_share")
        lines.append(f"| {row['rules']} | {row['head']} | {row['mask']} | " + " | ".join(cells)
                     + f" | {row['ours']['predicted_share']:.4f} | {'-' if one is None else f'{one:.4f}'} |")  # fmt: skip
    for label, row in (("same images", results["unet"]), ("own 128-px images", results["unet_own_images"])):
        cells = [f"{row['ours'][k]:.3f} \\| {row['paper'][k]:.3f}" for k in METRICS]
        lines.append(f"| - | U-Net ({label}) | argmax | " + " | ".join(cells)
                     + f" | {row['ours']['predicted_share']:.4f} | - |")  # fmt: skip
    lines += ["", "Average precision of the PR curves (no skill = the defect pixel share):", ""]
    lines += ["| curve | AP | recall, precision at the highest cut |", "| --- | --- | --- |"]
    for name, ap in results["average_precision"].items():
        top = results["highest_cut"][name]
        lines.append(f"| {name} | {ap:.3f} | {top['recall']:.3f}, {top['precision']:.3f} |")
    seconds = ", ".join(f"{k} {v:.1f} s" for k, v in results["seconds"].items())
    lines += ["", f"Runtime: {seconds}."]
    return "\n".join(lines)


STYLE = {"unet": ("black", "-"), "gmm": ("tab:orange", None), "bmm": ("tab:blue", None), "raw": ("tab:green", None)}
HEAD_LINE = {"128N": "-", "one FC": "--"}


def plotted_points(curve: PRCurve) -> tuple[np.ndarray, np.ndarray]:
    """recall, precision without scikit-learn's (recall 0, precision 1) end point; a curve whose
    highest cut already has recall > 0 (the GMM/BMM score-1 plateau) is extended to recall 0 at
    that cut's precision, the horizontal line of seed 001's Figs 4-7."""
    recall = np.r_[curve.recall[:-1], 0.0]
    precision = np.r_[curve.precision[:-1], curve.precision[-2]]
    keep = curve_points(recall, precision, 2000)
    return recall[keep], precision[keep]


def curve_label(name: str, curve: PRCurve) -> str:
    kind = name.rsplit("/", 1)[-1]
    if kind == "unet":
        what = "U-Net probability"
    else:
        what = f"{'raw LRP' if kind == 'raw' else kind.upper()} ({name.split('/')[1]})"
    return f"{what}, AP {curve.average_precision:.3f}"


def pr_figure_png(curves: dict[str, PRCurve], no_skill: float) -> bytes:
    """Two panels like seed 001's Figs 5 (our rules) and 4 (Montavon's), the U-Net on both."""
    figure = Figure(figsize=(11.0, 5.6))
    for k, rules in enumerate(RULE_SETS):
        axes = figure.add_subplot(1, 2, k + 1)
        for name in ["unet"] + [n for n in curves if n.startswith(f"{rules}/")]:
            kind = name.rsplit("/", 1)[-1]
            colour, line = STYLE[kind]
            recall, precision = plotted_points(curves[name])
            axes.plot(recall, precision, color=colour, linestyle=line or HEAD_LINE[name.split("/")[1]],
                      linewidth=1.3, label=curve_label(name, curves[name]))  # fmt: skip
        axes.axhline(no_skill, color="grey", linewidth=1.0, linestyle=":", label=f"no skill ({no_skill:.4f})")
        axes.set(xlabel="recall", ylabel="precision", xlim=(0.0, 1.0), ylim=(0.0, 1.02),
                 title=f"LRP rules: {rules}")  # fmt: skip
        axes.grid(alpha=0.3)
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize="x-small")
    figure.tight_layout()
    return figure_png(figure, dpi=100)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n-test", type=int, default=400, help="first N samples of the test split (default 400)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--pr-png", type=Path, default=DEFAULT_PR_PNG, help="where the PR figure goes")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--vgg-version", default=VGG_VERSION, help="VGG-11 heads: 2 (192 px, default) or 1 (64 px)")
    args = parser.parse_args(argv)
    if args.n_test < 2 or args.threads < 1 or args.batch_size < 1:
        parser.error("--n-test must be >= 2, --threads and --batch-size >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"cpus={os.cpu_count()} threads={args.threads} load={os.getloadavg()[0]:.2f} n_test={args.n_test} "
          f"vgg_version={args.vgg_version}")  # fmt: skip
    results = reproduce(args.n_test, batch_size=args.batch_size, vgg_version=args.vgg_version)
    curves = results.pop("curves")
    args.pr_png.parent.mkdir(parents=True, exist_ok=True)
    args.pr_png.write_bytes(pr_figure_png(curves, results["positive_share"]))
    print(format_report(results))
    print(f"\nPR figure: {args.pr_png}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
