"""Simple (isodata) against skimage.filters.threshold_isodata."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.filters import threshold_isodata

from lrpseg.masks import InvalidRelevanceError, isodata_threshold, simple


def normalised(relevance: np.ndarray) -> np.ndarray:
    return (relevance - relevance.min()) / (relevance.max() - relevance.min())


def test_simple_equals_skimage_on_quantised_maps(lrp_map: tuple[np.ndarray, np.ndarray]) -> None:
    # On 8-bit data skimage's histogram is exact, so both define the same split:
    # values <= t form the low class and t = (mean_low + mean_high) / 2.
    levels = np.round(normalised(lrp_map[0]) * 255).astype(np.uint8)
    reference = threshold_isodata(levels)
    result = simple(levels)
    assert int(np.floor(result.threshold)) == reference
    assert np.array_equal(result.mask, levels > reference)


def test_simple_is_within_skimage_histogram_resolution_on_float_maps(lrp_map: tuple[np.ndarray, np.ndarray]) -> None:
    x = normalised(lrp_map[0])
    result = simple(lrp_map[0])
    bin_width = 1.0 / 256  # skimage bins float images into 256 bins
    assert abs(result.params["normalised_threshold"] - threshold_isodata(x)) <= 2 * bin_width


def test_threshold_is_an_exact_fixed_point(lrp_map: tuple[np.ndarray, np.ndarray]) -> None:
    x = normalised(lrp_map[0]).ravel()
    t, iterations, converged = isodata_threshold(x)
    assert converged and iterations >= 1
    assert t == pytest.approx((x[x <= t].mean() + x[x > t].mean()) / 2, rel=1e-12)


def test_threshold_is_reported_in_relevance_units(lrp_map: tuple[np.ndarray, np.ndarray]) -> None:
    relevance = lrp_map[0]
    result = simple(relevance)
    assert np.array_equal(result.mask, relevance > result.threshold)
    assert result.score is None


@pytest.mark.parametrize("scale", [1e-200, 1e-6, 1e6, 1e200])
def test_simple_does_not_depend_on_the_unit(lrp_map: tuple[np.ndarray, np.ndarray], scale: float) -> None:
    relevance = lrp_map[0]
    assert np.array_equal(simple(relevance * scale).mask, simple(relevance).mask)


def test_simple_finds_the_strongest_structures(lrp_map: tuple[np.ndarray, np.ndarray]) -> None:
    relevance, truth = lrp_map
    mask = simple(relevance).mask
    precision = np.count_nonzero(mask & truth) / np.count_nonzero(mask)
    assert precision > 0.95  # the isodata cut lands between the noise and the objects


@pytest.mark.parametrize(
    ("relevance", "note"),
    [
        (np.zeros((4, 4)), "constant map"),
        (np.full((1, 1), 3.0), "constant map"),
        (-np.arange(1.0, 10.0).reshape(3, 3), "no positive relevance"),
    ],
)
def test_simple_degenerate_maps_give_an_empty_mask(relevance: np.ndarray, note: str) -> None:
    result = simple(relevance)
    assert result.note == note
    assert result.mask.shape == relevance.shape and not result.mask.any()


def test_simple_on_two_pixels_splits_them() -> None:
    result = simple(np.array([[0.0, 1.0]]))
    assert result.mask.tolist() == [[False, True]]
    assert result.threshold == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("relevance", "message"),
    [
        (np.ones((2, 2, 2, 2)), "2-D"),
        (np.ones((0, 3)), "empty"),
        (np.array([[1.0, np.nan]]), "NaN"),
        (np.array([[1.0, np.inf]]), "NaN or infinite"),
        (np.ones((2, 2), dtype=complex), "real-valued"),
    ],
)
def test_invalid_relevance_is_rejected(relevance: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidRelevanceError, match=message):
        simple(relevance)


def test_threshold_means_are_summed_to_the_last_digits(lrp_map: tuple[np.ndarray, np.ndarray]) -> None:
    # each class summed on its own (the total minus the low sum lost digits when the high class is small)
    import math

    x = normalised(lrp_map[0]).ravel()
    t, _, _ = isodata_threshold(x)
    low, high = x[x <= t], x[x > t]
    assert t == pytest.approx((math.fsum(low) / low.size + math.fsum(high) / high.size) / 2, rel=1e-14, abs=0)
