"""Component: regions of the smoothed positive relevance, each cut at a share of its own peak."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import uniform_filter
from skimage.measure import label, regionprops

from lrpseg.masks import InvalidRelevanceError, component, scaled_filter_size


def reference(relevance: np.ndarray, low: float, keep: float, size: int) -> np.ndarray:
    """The same procedure written region by region with scikit-image (4-connected regions)."""
    positive = np.maximum(relevance / np.abs(relevance).max(), 0.0)
    smooth = uniform_filter(positive, size=size, mode="reflect")
    regions = label(smooth > low * smooth.max(), connectivity=1)
    mask = np.zeros(relevance.shape, dtype=bool)
    for region in regionprops(regions):
        inside = regions == region.label
        mask |= inside & (positive > keep * positive[inside].max())
    return mask


@pytest.mark.parametrize(("low", "keep"), [(0.05, 0.2), (0.1, 0.5), (0.02, 0.0)])
def test_component_equals_a_region_by_region_reference(
    lrp_map: tuple[np.ndarray, np.ndarray], low: float, keep: float
) -> None:
    relevance = lrp_map[0]
    result = component(relevance, low=low, keep=keep)
    assert result.params["filter_size"] == 3
    assert np.array_equal(result.mask, reference(relevance, low, keep, 3))
    assert np.array_equal(result.mask, result.score > keep)
    assert result.score.min() >= 0.0 and result.score.max() == 1.0


def test_a_weak_defect_is_kept_beside_a_strong_one() -> None:
    r = np.zeros((64, 64))
    r[10:14, 10:14] = 100.0  # strong defect with a fringe
    r[9, 10:14] = 30.0
    r[40:44, 40:44] = 2.0  # a defect 50x weaker: one global cut (Simple) loses it
    result = component(r, low=0.005, keep=0.5, filter_size=1)
    truth = np.zeros_like(r, dtype=bool)
    truth[10:14, 10:14] = truth[40:44, 40:44] = True
    assert np.array_equal(result.mask, truth)
    regions = result.params["region_list"]
    assert [g["kept_pixels"] for g in regions] == [16, 16] and regions[0]["peak"] == 100.0
    assert sum(g["positive_share"] for g in regions) == pytest.approx(1.0)
    assert regions[1]["centroid"] == [41.5, 41.5]


def test_filter_grows_with_the_image() -> None:
    assert [scaled_filter_size((s, s)) for s in (32, 128, 256, 512, 1024)] == [3, 3, 5, 9, 17]
    assert scaled_filter_size((1, 64, 600)) == 3  # the shorter side counts


def test_degenerate_maps() -> None:
    empty = component(-np.ones((8, 8)))
    assert not empty.mask.any() and empty.note == "no positive relevance" and empty.score is not None
    with pytest.raises(InvalidRelevanceError):
        component(np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="low"):
        component(np.ones((4, 4)), low=0.0)
    scaled = component(np.eye(6) * 1e-300)
    assert np.array_equal(scaled.mask, component(np.eye(6)).mask)


def test_region_statistics_equal_scipy_ndimage(lrp_map: tuple[np.ndarray, np.ndarray]) -> None:
    from scipy import ndimage

    relevance = lrp_map[0]
    result = component(relevance, low=0.02)
    positive = np.maximum(relevance / np.abs(relevance).max(), 0.0)
    smooth = uniform_filter(positive, size=3, mode="reflect")
    labels, count = ndimage.label(smooth > 0.02 * smooth.max())
    index = np.arange(1, count + 1)
    mass = ndimage.sum_labels(positive, labels, index)
    order = np.argsort(-mass, kind="stable")[:20]
    peaks = ndimage.maximum(positive, labels, index)
    centres = ndimage.center_of_mass(np.ones_like(positive), labels, index)
    regions = result.params["region_list"]
    assert result.params["regions"] == count > 3 and len(regions) == min(count, 20)
    for found, i in zip(regions, order, strict=True):
        assert found["pixels"] == int(ndimage.sum_labels(np.ones_like(positive), labels, i + 1))
        assert found["kept_pixels"] == int(np.count_nonzero((labels == i + 1) & result.mask))
        assert found["peak"] == float(peaks[i] * np.abs(relevance).max())
        assert found["positive_share"] == float(mass[i] / positive.sum())
        assert found["centroid"] == [round(float(c), 2) for c in centres[i]]
