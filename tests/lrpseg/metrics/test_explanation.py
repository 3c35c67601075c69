from __future__ import annotations

import json

import numpy as np
import pytest

from lrpseg.metrics import InvalidScoreError, ShapeMismatchError, explanation_metrics


def test_metrics_of_a_hand_made_three_channel_map() -> None:
    relevance = np.zeros((3, 4, 5))
    relevance[0, 1, 1] = 4.0
    relevance[1, 1, 2] = 2.0
    relevance[2, 3, 4] = -1.0
    relevance[0, 0, 0] = 1.0
    relevance[1, 0, 0] = -0.5  # pixel (0, 0) sums to +0.5
    mask = np.zeros((4, 5), dtype=bool)
    mask[1, 1:3] = True
    m = explanation_metrics(relevance, mask, r_out_sum=5.0)
    assert m["relevance_sum"] == pytest.approx(5.5)
    assert m["conservation"] == pytest.approx(5.5 / 5.0)
    assert m["relevance_mass_accuracy"] == pytest.approx(6.0 / 6.5)  # positive pixel sums 4 + 2 + 0.5
    assert m["pointing_game"] == 1.0
    assert m["negative_share"] == pytest.approx(1.5 / 8.5)
    assert m["channel_shares"] == pytest.approx([5.0 / 5.5, 1.5 / 5.5, -1.0 / 5.5])
    assert sum(m["channel_shares"]) == pytest.approx(1.0)
    json.dumps(m, allow_nan=False)


def test_pointing_game_misses_when_the_maximum_is_outside() -> None:
    relevance = np.random.default_rng(0).normal(size=(16, 16))
    relevance[12, 3] = 100.0
    mask = np.zeros((16, 16), dtype=bool)
    mask[:8] = True
    assert explanation_metrics(relevance, mask)["pointing_game"] == 0.0
    mask[12, 3] = True
    assert explanation_metrics(relevance, mask)["pointing_game"] == 1.0


def test_relevance_mass_accuracy_matches_a_direct_computation() -> None:
    rng = np.random.default_rng(2)
    relevance = rng.standard_t(2, size=(2, 32, 32))
    mask = rng.random((32, 32)) < 0.2
    pixel = relevance.sum(0)
    expected = np.clip(pixel, 0, None)[mask].sum() / np.clip(pixel, 0, None).sum()
    m = explanation_metrics(relevance, mask)
    assert m["relevance_mass_accuracy"] == pytest.approx(expected, rel=1e-12)
    assert m["negative_share"] == pytest.approx(np.abs(relevance[relevance < 0]).sum() / np.abs(relevance).sum())
    assert "conservation" not in m  # no r_out_sum given


def test_degenerate_maps_are_finite() -> None:
    m = explanation_metrics(np.zeros((4, 4)), np.zeros((4, 4), dtype=bool), r_out_sum=0.0)
    assert m["relevance_mass_accuracy"] == 0.0 and m["negative_share"] == 0.0
    assert m["channel_shares"] == [0.0] and "conservation" not in m
    m = explanation_metrics(-np.ones((4, 4)), np.ones((4, 4), dtype=bool))
    assert m["relevance_mass_accuracy"] == 0.0 and m["negative_share"] == 1.0


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ShapeMismatchError, match="mask shape"):
        explanation_metrics(np.ones((1, 4, 4)), np.ones((4, 5), dtype=bool))
    with pytest.raises(ShapeMismatchError, match=r"\(C, H, W\)"):
        explanation_metrics(np.ones((1, 1, 4, 4)), np.ones((4, 4), dtype=bool))
    with pytest.raises(InvalidScoreError, match="NaN"):
        explanation_metrics(np.full((4, 4), np.nan), np.ones((4, 4), dtype=bool))
    with pytest.raises(InvalidScoreError, match="r_out_sum"):
        explanation_metrics(np.ones((4, 4)), np.ones((4, 4), dtype=bool), r_out_sum=float("inf"))
