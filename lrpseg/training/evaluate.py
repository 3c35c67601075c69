"""Test metrics written into the model cards (and recomputed by the tests).

Segmentation metrics pool all pixels of the set and count only the defect class,
as seed 001 does; classifier metrics are seed 001's Table 2 figures.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from lrpseg.data import DefectDatasetConfig, Sample, generate_split, stack_samples
from lrpseg.data.surface import DISTRACTOR_KINDS


def ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def segmentation_metrics(pred: Tensor, masks: Tensor) -> dict[str, float]:
    """pred, masks: bool (N, H, W). Pixel IoU/precision/recall/Dice of the defect class,
    plus the share of defect-free images with any predicted defect pixel."""
    tp = int((pred & masks).sum())
    fp = int((pred & ~masks).sum())
    fn = int((~pred & masks).sum())
    clean = ~masks.flatten(1).any(dim=1)
    flagged = pred.flatten(1).any(dim=1)
    return {
        "defect_iou": ratio(tp, tp + fp + fn),
        "defect_precision": ratio(tp, tp + fp),
        "defect_recall": ratio(tp, tp + fn),
        "defect_dice": ratio(2 * tp, 2 * tp + fp + fn),
        "defect_pixel_share": ratio(int(masks.sum()), masks.numel()),
        "clean_image_false_alarm_rate": ratio(int((flagged & clean).sum()), int(clean.sum())),
    }


def classification_metrics(pred: Tensor, labels: Tensor) -> dict[str, float]:
    """pred, labels: int (N,) in {0, 1}; 1 = defect."""
    pos, neg = labels == 1, labels == 0
    tpr = ratio(int((pred[pos] == 1).sum()), int(pos.sum()))
    tnr = ratio(int((pred[neg] == 0).sum()), int(neg.sum()))
    return {
        "balanced_accuracy": (tpr + tnr) / 2,
        "tpr": tpr,
        "tnr": tnr,
        "accuracy": ratio(int((pred == labels).sum()), labels.numel()),
    }


@torch.no_grad()
def predict(model: nn.Module, images: Tensor, batch_size: int = 32, device: str | torch.device = "cpu") -> Tensor:
    """argmax class per pixel (segmenter) or per image (classifier), on the CPU."""
    model.eval()
    out = [model(images[i : i + batch_size].to(device)).argmax(dim=1).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def evaluate(model: nn.Module, kind: str, images: Tensor, masks: Tensor, labels: Tensor,
             device: str | torch.device = "cpu") -> dict[str, float]:  # fmt: skip
    """images already normalised for the model."""
    return metrics_of(kind, predict(model, images, device=device), masks, labels)


def metrics_of(kind: str, pred: Tensor, masks: Tensor, labels: Tensor) -> dict[str, float]:
    if kind == "segmenter":
        return segmentation_metrics(pred == 1, masks == 1)
    return classification_metrics(pred, labels)


def breakdown(kind: str, pred: Tensor, samples: list[Sample]) -> dict[str, dict[str, float]]:
    """Where the model errs: recall per defect kind, false alarms on defect-free images per distractor.

    pred: argmax output for `samples` ((N, H, W) for a segmenter, (N,) for a classifier).
    A segmenter "alarms" on an image when it predicts any defect pixel.
    """
    flagged = pred.flatten(1).eq(1).any(dim=1) if kind == "segmenter" else pred.eq(1)
    result: dict[str, dict[str, float]] = {}
    for defect in ("crack", "blowhole"):
        idx = [i for i, s in enumerate(samples) if s.kind == defect]
        row: dict[str, float] = {"images": len(idx), "detected": ratio(int(flagged[idx].sum()), len(idx))}
        if kind == "segmenter" and idx:
            masks = torch.from_numpy(np.stack([samples[i].mask for i in idx]))
            metrics = segmentation_metrics(pred[idx] == 1, masks)
            row |= {"defect_iou": metrics["defect_iou"], "defect_recall": metrics["defect_recall"]}
        result[defect] = row
    for distractor in ("none", *DISTRACTOR_KINDS):
        idx = [i for i, s in enumerate(samples) if not s.label and (distractor in s.distractors or
               (distractor == "none" and not s.distractors))]  # fmt: skip
        result[f"defect-free, {distractor}"] = {
            "images": len(idx),
            "false_alarm_rate": ratio(int(flagged[idx].sum()), len(idx)),
        }
    return {k: {m: round(v, 4) for m, v in row.items()} for k, row in result.items()}


def card_report(model: nn.Module, kind: str, samples: list[Sample], mean: float, std: float
                ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:  # fmt: skip
    """(card metrics rounded to 6 places, breakdown) of a model on generated samples."""
    images, masks, labels = stack_samples(samples)
    pred = predict(model, (images - mean) / std)
    metrics = {k: round(v, 6) for k, v in metrics_of(kind, pred, masks, labels).items()}
    return metrics, breakdown(kind, pred, samples)


def evaluation_set(evaluation: dict) -> tuple[Tensor, Tensor, Tensor]:
    """Regenerate the set a card's metrics were measured on: images in [0, 1], masks, labels."""
    config = DefectDatasetConfig.from_dict(evaluation["data"])
    samples = generate_split(evaluation["split"], evaluation["n"], config, start=evaluation.get("start", 0))
    return stack_samples(samples)
