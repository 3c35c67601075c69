"""Classifier metrics over a labelled set (seed 001 Tables 2 and 4): balanced accuracy, TPR, TNR."""

from __future__ import annotations

from typing import Any

import numpy as np

from lrpseg.metrics.segmentation import UNDEFINED, confusion
from lrpseg.metrics.validation import as_mask, ratio, same_shape


def classification_metrics(y_true: Any, y_pred: Any) -> dict[str, float | int]:
    """Binary labels, positive label 1.

    tpr = TP / (TP + FN), tnr = TN / (TN + FP); a rate whose class is absent
    from y_true is 1.0 (nothing to get wrong). balanced_accuracy is the mean of
    the rates of the classes present in y_true, as in scikit-learn's
    balanced_accuracy_score. Also returns accuracy and the four counts.
    """
    t, p = as_mask(y_true, "y_true").ravel(), as_mask(y_pred, "y_pred").ravel()
    same_shape(t, p, "y_true and y_pred")
    c = confusion(p, t)
    rates = []
    if c.tp + c.fn:
        rates.append(c.tp / (c.tp + c.fn))
    if c.tn + c.fp:
        rates.append(c.tn / (c.tn + c.fp))
    return {
        "balanced_accuracy": float(np.mean(rates)),
        "tpr": ratio(c.tp, c.tp + c.fn, UNDEFINED),
        "tnr": ratio(c.tn, c.tn + c.fp, UNDEFINED),
        "accuracy": (c.tp + c.tn) / c.total,
        "tp": c.tp,
        "fp": c.fp,
        "fn": c.fn,
        "tn": c.tn,
    }
