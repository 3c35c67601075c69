"""GMM against a direct scikit-learn run of seed 001's procedure."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import uniform_filter
from scipy.stats import norm
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from lrpseg.masks import gmm
from lrpseg.masks.gaussian_mixture import posterior
from lrpseg.masks.synthetic import lrp_like_map
from tests.lrpseg.masks.helpers import iou


def reference_gmm(relevance: np.ndarray, seed: int) -> tuple[np.ndarray, GaussianMixture, int]:
    """Seed 001 §3.3.2 written out: 5x5 mean filter, 3-component GMM, defect = max likelihood at the max."""
    filtered = uniform_filter(relevance / np.abs(relevance).max(), size=5, mode="reflect")
    values = filtered / np.abs(filtered).max()
    with threadpool_limits(limits=1):  # same numbers, no oversubscribed threads on a 2-core runner
        gm = GaussianMixture(n_components=3, init_params="kmeans", random_state=seed).fit(values.reshape(-1, 1))
    sigma = np.sqrt(gm.covariances_.ravel())
    defect = int(np.argmax(norm.logpdf(values.max(), gm.means_.ravel(), sigma)))
    return gm.predict_proba(values.reshape(-1, 1))[:, defect].reshape(values.shape), gm, defect


@pytest.mark.parametrize("seed", [0, 7])
def test_gmm_equals_direct_sklearn_procedure(lrp_map: tuple[np.ndarray, np.ndarray], seed: int) -> None:
    relevance = lrp_map[0]  # 128 x 128 < max_fit_samples: both fit every pixel
    expected, gm, defect = reference_gmm(relevance, seed)
    result = gmm(relevance, seed=seed)
    np.testing.assert_allclose(result.params["means"], gm.means_.ravel(), rtol=1e-12)
    np.testing.assert_allclose(result.params["weights"], gm.weights_, rtol=1e-12)
    assert result.params["defect_component"] == defect
    np.testing.assert_allclose(result.score, expected, rtol=0, atol=1e-12)
    assert np.array_equal(result.mask, expected > 0.5)


def test_posterior_equals_predict_proba() -> None:
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(0, 0.01, 3000), rng.normal(0.4, 0.1, 300), rng.normal(0.8, 0.2, 100)])
    gm = GaussianMixture(3, random_state=0).fit(values.reshape(-1, 1))
    for k in range(3):
        np.testing.assert_allclose(posterior(gm, values, k), gm.predict_proba(values.reshape(-1, 1))[:, k], atol=1e-13)


@pytest.mark.parametrize("seed", [0, 5])
def test_quantile_subsample_keeps_the_full_fit(seed: int) -> None:
    relevance, _ = lrp_like_map((256, 256), seed=seed)
    full = gmm(relevance, max_fit_samples=None)
    sub = gmm(relevance)
    assert sub.params["fit_samples"] < full.params["fit_samples"] == relevance.size
    assert iou(sub.mask, full.mask) > 0.95
    assert np.abs(sub.score - full.score).mean() < 0.01


def test_gmm_is_deterministic_and_unit_free(lrp_map: tuple[np.ndarray, np.ndarray]) -> None:
    relevance = lrp_map[0]
    first, second = gmm(relevance), gmm(relevance.copy())
    assert np.array_equal(first.score, second.score)
    assert np.array_equal(gmm(relevance * 1e-9).mask, first.mask)
    assert first.mask.dtype == bool and first.score.dtype == np.float64
    assert first.score.min() >= 0.0 and first.score.max() <= 1.0


def test_gmm_defect_component_covers_the_maximum(lrp_map: tuple[np.ndarray, np.ndarray]) -> None:
    result = gmm(lrp_map[0])
    means = np.asarray(result.params["means"])
    variances = np.asarray(result.params["variances"])
    # the chosen component is the most likely source of the largest value: at x = 1
    # (the normalised maximum) its density beats the others'
    density = norm.pdf(1.0, means, np.sqrt(variances))
    assert result.params["defect_component"] == int(np.argmax(density))


@pytest.mark.parametrize(
    ("relevance", "note"),
    [
        (np.zeros((6, 6)), "constant map"),
        (np.full((1, 1), -2.0), "constant map"),
        (-np.abs(np.random.default_rng(0).normal(size=(9, 9))) - 0.1, "no positive relevance"),
    ],
)
def test_gmm_degenerate_maps_give_an_empty_mask(relevance: np.ndarray, note: str) -> None:
    result = gmm(relevance)
    assert result.note == note
    assert not result.mask.any() and np.array_equal(result.score, np.zeros(relevance.shape))


def test_gmm_with_two_distinct_values_uses_two_components() -> None:
    relevance = np.zeros((12, 12))
    relevance[:, :6] = 1.0  # after the 5x5 filter: a ramp, but the fit sample sees it whole
    result = gmm(relevance, filter_size=1)
    assert result.params["n_components"] == 2
    assert np.array_equal(result.mask, relevance > 0.5)
