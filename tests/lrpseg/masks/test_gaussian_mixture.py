"""GMM against a direct scikit-learn run of seed 001's procedure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import uniform_filter
from scipy.stats import norm
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from lrpseg.masks import gaussian_mixture, gmm
from lrpseg.masks.gaussian_mixture import (
    MAX_FIT_SAMPLES,
    GaussianFit,
    fit_gaussian_mixture,
    kmeans_responsibilities,
    posterior,
    prepare_gmm_values,
)
from lrpseg.masks.sampling import quantile_sample
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
        np.testing.assert_allclose(
            posterior(GaussianFit.of(gm), values, k), gm.predict_proba(values.reshape(-1, 1))[:, k], atol=1e-13
        )


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


def sklearn_fit(values: np.ndarray, seed: int, k: int = 3) -> GaussianMixture:
    with threadpool_limits(limits=1):
        return GaussianMixture(n_components=k, init_params="kmeans", random_state=seed).fit(values.reshape(-1, 1))


@pytest.mark.parametrize("seed", [0, 3])
def test_torch_em_equals_sklearn_from_the_same_start(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = [
        np.concatenate([rng.normal(0, 0.02, 4000), rng.normal(0.3, 0.1, 500), rng.normal(0.9, 0.05, 100)]),
        np.concatenate([rng.normal(-0.1, 0.05, 3000), rng.normal(0.5, 0.2, 1500), rng.normal(0.6, 0.01, 100)]),
        rng.standard_t(3, 4600) / 20,
    ]
    x = torch.from_numpy(np.stack(rows))
    resp = torch.cat([kmeans_responsibilities(x[i], 3, seed) for i in range(len(rows))])  # (3, K, N)
    fit = fit_gaussian_mixture(x, resp)  # three maps in one batch
    for i, values in enumerate(rows):
        gm = sklearn_fit(values, seed)
        np.testing.assert_allclose(fit.means[i].numpy(), gm.means_.ravel(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(fit.variances[i].numpy(), gm.covariances_.ravel(), rtol=1e-9)
        np.testing.assert_allclose(fit.weights[i].numpy(), gm.weights_, rtol=1e-9)
        assert fit.iterations[i] == gm.n_iter_ and fit.converged[i] == gm.converged_


@pytest.mark.parametrize("zeros", [False, True])
def test_gmm_on_a_256_map_equals_sklearn_on_its_fit_sample(zeros: bool) -> None:
    relevance, _ = lrp_like_map((256, 256), seed=4)  # 65536 values: fitted on 32768 quantiles
    if zeros:  # a U-Net's relevance is exactly 0 far from the output: the EM runs on distinct values x counts
        relevance[:160] = 0.0
    result = gmm(relevance, seed=2)
    values = prepare_gmm_values(torch.from_numpy(relevance))
    gm = sklearn_fit(quantile_sample(values.reshape(-1), MAX_FIT_SAMPLES).numpy(), seed=2)
    np.testing.assert_allclose(result.params["means"], gm.means_.ravel(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(result.params["variances"], gm.covariances_.ravel(), rtol=1e-6)
    np.testing.assert_allclose(result.params["weights"], gm.weights_, rtol=1e-6)
    defect = result.params["defect_component"]
    expected = gm.predict_proba(values.numpy().reshape(-1, 1))[:, defect].reshape(relevance.shape)
    np.testing.assert_allclose(result.score, expected, rtol=0, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gmm_on_cuda_equals_the_cpu_fit(lrp_map: tuple[np.ndarray, np.ndarray]) -> None:
    relevance = lrp_map[0]
    cpu, gpu = gmm(relevance, seed=1), gmm(torch.from_numpy(relevance).cuda(), seed=1)
    np.testing.assert_allclose(gpu.params["means"], cpu.params["means"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gpu.score, cpu.score, rtol=0, atol=1e-9)


def test_the_posterior_in_steps_equals_one_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps of POSTERIOR_CHUNK values bound the temporaries; every value's score is the same to the
    bit on one thread (with more, where torch splits the work moves a value between a vectorised
    and a scalar exp: 1 ulp, in the one-step result as well)."""
    relevance = lrp_like_map((200, 177), seed=4)[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        monkeypatch.setattr(gaussian_mixture, "POSTERIOR_CHUNK", 1 << 40)
        whole = gmm(relevance)
        monkeypatch.setattr(gaussian_mixture, "POSTERIOR_CHUNK", 1 << 10)  # 35 steps, the last one shorter
        stepped = gmm(relevance)
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(stepped.score, whole.score) and np.array_equal(stepped.mask, whole.mask)
