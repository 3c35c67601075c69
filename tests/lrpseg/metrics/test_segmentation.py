"""Segmentation metrics and PR curves against scikit-learn."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    jaccard_score,
    precision_recall_curve,
    precision_score,
    recall_score,
)

from lrpseg.metrics import InvalidMaskError, InvalidScoreError, ShapeMismatchError, pr_curve, segmentation_metrics


def random_masks(seed: int, share: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.random((48, 40)) < share
    pred = np.where(rng.random(ref.shape) < 0.7, ref, rng.random(ref.shape) < share)
    return pred, ref


def sklearn_metrics(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    y_true, y_pred = ref.ravel(), pred.ravel()
    f1 = f1_score(y_true, y_pred, zero_division=1.0)
    return {
        "iou": jaccard_score(y_true, y_pred, zero_division=1.0),
        "precision": precision_score(y_true, y_pred, zero_division=1.0),
        "recall": recall_score(y_true, y_pred, zero_division=1.0),
        "dice": f1,
        "f1": f1,
        "pixel_accuracy": accuracy_score(y_true, y_pred),
        "positive_share": y_true.mean(),
    }


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("share", [0.02, 0.3])
def test_segmentation_metrics_equal_sklearn(seed: int, share: float) -> None:
    pred, ref = random_masks(seed, share)
    ours = segmentation_metrics(pred, ref)
    expected = sklearn_metrics(pred, ref)
    assert ours.keys() == expected.keys()
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key


@pytest.mark.parametrize(
    ("pred_any", "ref_any"),
    [(False, False), (False, True), (True, False)],
    ids=["both-empty", "pred-empty", "ref-empty"],
)
def test_empty_masks_follow_sklearn_zero_division_one(pred_any: bool, ref_any: bool) -> None:
    pred = np.zeros((5, 6), dtype=bool)
    ref = np.zeros((5, 6), dtype=bool)
    pred[1, 1:3] = pred_any
    ref[1:3, 2] = ref_any
    ours = segmentation_metrics(pred, ref)
    expected = sklearn_metrics(pred, ref)
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value), key
    assert all(np.isfinite(v) for v in ours.values())
    if not pred_any and not ref_any:
        assert ours["iou"] == ours["dice"] == ours["precision"] == ours["recall"] == 1.0


def test_masks_may_be_0_1_numbers() -> None:
    pred, ref = random_masks(9, 0.2)
    assert segmentation_metrics(pred.astype(np.uint8), ref.astype(np.float32)) == segmentation_metrics(pred, ref)


@pytest.mark.parametrize(
    ("pred", "ref", "error", "message"),
    [
        (np.zeros((2, 2)), np.zeros((2, 3)), ShapeMismatchError, "differ in shape"),
        (np.full((2, 2), 0.5), np.zeros((2, 2)), InvalidMaskError, "0/1"),
        (np.zeros((0, 2)), np.zeros((0, 2)), InvalidMaskError, "empty"),
        (np.array([["a", "b"]]), np.zeros((1, 2)), InvalidMaskError, "dtype"),
    ],
)
def test_bad_masks_are_rejected(pred, ref, error, message) -> None:
    with pytest.raises(error, match=message):
        segmentation_metrics(pred, ref)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_pr_curve_equals_sklearn(seed: int, ties: bool) -> None:
    rng = np.random.default_rng(seed)
    ref = rng.random((40, 50)) < 0.1
    score = np.clip(ref * 0.4 + rng.normal(0.3, 0.2, ref.shape), 0, 1)
    if ties:
        score = np.round(score, 1)  # many equal scores, like a saturated GMM posterior
    curve = pr_curve(score, ref)
    precision, recall, thresholds = precision_recall_curve(ref.ravel(), score.ravel())
    np.testing.assert_allclose(curve.precision, precision, rtol=1e-12)
    np.testing.assert_allclose(curve.recall, recall, rtol=1e-12)
    np.testing.assert_array_equal(curve.thresholds, thresholds)
    assert curve.average_precision == pytest.approx(average_precision_score(ref.ravel(), score.ravel()), rel=1e-12)
    assert curve.no_skill == pytest.approx(ref.mean())


def test_pr_curve_without_positives_is_finite_and_matches_sklearn() -> None:
    score = np.random.default_rng(0).random((8, 8))
    ref = np.zeros((8, 8), dtype=bool)
    curve = pr_curve(score, ref)
    with pytest.warns(UserWarning):
        precision, recall, _ = precision_recall_curve(ref.ravel(), score.ravel())
    np.testing.assert_array_equal(curve.recall, recall)
    np.testing.assert_array_equal(curve.precision, precision)
    assert curve.average_precision == 0.0 and curve.no_skill == 0.0


def test_perfect_score_has_average_precision_one() -> None:
    ref = np.zeros((10, 10), dtype=bool)
    ref[2:4, 3:7] = True
    assert pr_curve(ref.astype(float), ref).average_precision == 1.0


def test_pr_curve_to_dict_is_json_safe_and_downsampled() -> None:
    rng = np.random.default_rng(3)
    ref = rng.random((100, 100)) < 0.05
    curve = pr_curve(rng.random(ref.shape) + ref, ref)
    assert curve.precision.size > 5000
    data = curve.to_dict(max_points=64)
    json.dumps(data, allow_nan=False)
    assert len(data["precision"]) == len(data["recall"]) <= 64
    assert len(data["thresholds"]) == len(data["precision"]) - 1  # the final point has no cut
    assert (data["precision"][0], data["recall"][0]) == (curve.precision[0], curve.recall[0])
    assert (data["precision"][-1], data["recall"][-1]) == (1.0, 0.0)
    assert np.all(np.diff(data["recall"]) <= 0) and np.all(np.diff(data["thresholds"]) > 0)
    assert data["points"] == curve.precision.size


def test_pr_curve_rejects_non_finite_scores() -> None:
    with pytest.raises(InvalidScoreError, match="NaN"):
        pr_curve(np.array([[0.1, np.nan]]), np.array([[0, 1]]))
