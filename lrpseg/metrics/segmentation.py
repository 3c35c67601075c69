"""Predicted vs reference masks: IoU, precision, recall, Dice/F1, PR curves, average precision.

Empty-mask convention (scikit-learn's zero_division=1.0): a ratio whose
denominator is zero is 1.0, because nothing was got wrong. No predicted pixel ->
precision 1.0; no reference pixel -> recall 1.0; both empty -> IoU = Dice = F1 =
1.0. A prediction that misses a non-empty reference entirely still scores
recall = IoU = Dice = 0. Nothing returned is ever NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lrpseg.metrics.validation import as_mask, as_scores, ratio, same_shape

UNDEFINED = 1.0  # the value of a ratio with a zero denominator (see the module docstring)


@dataclass(frozen=True)
class Confusion:
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.fn + self.tn


def confusion(pred: Any, ref: Any) -> Confusion:
    """Pixel counts of a predicted vs a reference mask (same shape, bool or 0/1)."""
    p, r = as_mask(pred, "pred"), as_mask(ref, "ref")
    same_shape(p, r, "pred and ref")
    tp = int(np.count_nonzero(p & r))
    n_pred, n_ref = int(np.count_nonzero(p)), int(np.count_nonzero(r))
    return Confusion(tp=tp, fp=n_pred - tp, fn=n_ref - tp, tn=p.size - n_pred - n_ref + tp)


def segmentation_metrics(pred: Any, ref: Any) -> dict[str, float]:
    """iou, precision, recall, dice, f1 (= dice for binary masks), pixel_accuracy and
    positive_share (the reference's positive share = a no-skill predictor's precision)."""
    c = confusion(pred, ref)
    dice = ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn, UNDEFINED)
    return {
        "iou": ratio(c.tp, c.tp + c.fp + c.fn, UNDEFINED),
        "precision": ratio(c.tp, c.tp + c.fp, UNDEFINED),
        "recall": ratio(c.tp, c.tp + c.fn, UNDEFINED),
        "dice": dice,
        "f1": dice,
        "pixel_accuracy": (c.tp + c.tn) / c.total,
        "positive_share": (c.tp + c.fn) / c.total,
    }


@dataclass(frozen=True)
class PRCurve:
    """A precision-recall curve in scikit-learn's layout.

    precision and recall have one point per distinct score plus the final
    (precision 1, recall 0) point; thresholds[i] is the score cut (score >=
    thresholds[i] is positive) of point i, ascending, one fewer than the points.
    """

    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray
    average_precision: float
    no_skill: float

    def to_dict(self, max_points: int = 200) -> dict[str, Any]:
        """JSON-safe, with at most max_points points spread evenly along the curve's length.

        The first and the final point are always kept; "thresholds" lists the
        cut of each kept point except the final one, which has none.
        """
        if max_points < 2:
            raise ValueError(f"max_points must be at least 2, got {max_points}")
        keep = curve_points(self.recall, self.precision, max_points)
        has_threshold = keep[keep < self.thresholds.size]
        return {
            "precision": [float(v) for v in self.precision[keep]],
            "recall": [float(v) for v in self.recall[keep]],
            "thresholds": [float(v) for v in self.thresholds[has_threshold]],
            "average_precision": float(self.average_precision),
            "no_skill": float(self.no_skill),
            "points": int(self.precision.size),
        }


def curve_points(x: np.ndarray, y: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most max_points points evenly spaced in arc length, ends included."""
    n = x.size
    if n <= max_points:
        return np.arange(n)
    length = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    if length[-1] == 0.0:
        return np.array([0, n - 1])
    targets = np.linspace(0.0, length[-1], max_points)
    index = np.clip(np.searchsorted(length, targets), 0, n - 1)
    index[0], index[-1] = 0, n - 1
    return np.unique(index)


def pr_curve(score: Any, ref: Any) -> PRCurve:
    """Precision-recall curve and average precision of a per-pixel score against a reference mask.

    Same numbers as sklearn.metrics.precision_recall_curve / average_precision_score
    (AP = sum of (R_n - R_{n-1}) P_n, no interpolation). Without reference
    positives recall is 1.0 everywhere and AP is 0.0, as in scikit-learn;
    no_skill (the positive share) is then 0.0.
    """
    s = as_scores(score, "score").ravel()
    r = as_mask(ref, "ref")
    same_shape(s, r.ravel(), "score and ref")
    r = r.ravel()
    order = np.argsort(s, kind="mergesort")[::-1]
    s_sorted, r_sorted = s[order], r[order]
    last_of_run = np.r_[np.flatnonzero(np.diff(s_sorted)), s.size - 1]
    tps = np.cumsum(r_sorted, dtype=np.int64)[last_of_run]
    fps = 1 + last_of_run - tps
    precision = tps / (tps + fps)
    recall = tps / tps[-1] if tps[-1] > 0 else np.ones(tps.size)
    precision = np.r_[precision[::-1], 1.0]
    recall = np.r_[recall[::-1], 0.0]
    average_precision = float(-np.sum(np.diff(recall) * precision[:-1]))
    return PRCurve(
        precision=precision,
        recall=recall,
        thresholds=s_sorted[last_of_run][::-1].copy(),
        average_precision=max(average_precision, 0.0),  # -0.0 -> 0.0
        no_skill=float(tps[-1] / s.size),
    )
