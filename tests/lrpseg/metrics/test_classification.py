from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, recall_score

from lrpseg.metrics import InvalidMaskError, ShapeMismatchError, classification_metrics


@pytest.mark.parametrize("seed", range(3))
def test_rates_equal_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_true = rng.random(200) < 0.3
    y_pred = np.where(rng.random(200) < 0.85, y_true, ~y_true)
    ours = classification_metrics(y_true.astype(int), y_pred.astype(int))
    assert ours["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred), rel=1e-12)
    assert ours["tpr"] == pytest.approx(recall_score(y_true, y_pred), rel=1e-12)
    assert ours["tnr"] == pytest.approx(recall_score(~y_true, ~y_pred), rel=1e-12)
    assert ours["tp"] + ours["fn"] == int(y_true.sum()) and ours["tp"] + ours["fp"] == int(y_pred.sum())


@pytest.mark.parametrize("label", [0, 1])
def test_single_class_sets_match_sklearn_and_stay_finite(label: int) -> None:
    y_true = np.full(6, label)
    y_pred = np.array([0, 1, 1, 0, 1, 1])
    ours = classification_metrics(y_true, y_pred)
    with pytest.warns(UserWarning):
        expected = balanced_accuracy_score(y_true, y_pred)
    assert ours["balanced_accuracy"] == pytest.approx(expected)
    absent = "tnr" if label == 1 else "tpr"
    assert ours[absent] == 1.0  # no sample of that class: nothing to get wrong


def test_bad_labels_are_rejected() -> None:
    with pytest.raises(InvalidMaskError, match="0/1"):
        classification_metrics([0, 2], [0, 1])
    with pytest.raises(ShapeMismatchError):
        classification_metrics([0, 1, 1], [0, 1])
