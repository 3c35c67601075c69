"""BMM: EM recovers sampled Beta mixtures; the extractor separates LRP-like blob maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_dilation
from scipy.stats import beta as beta_distribution

from lrpseg.masks import bmm, fit_beta_mixture
from lrpseg.masks.beta_mixture import BACKGROUND_QUANTILE, BetaComponent, moments_to_beta
from lrpseg.masks.synthetic import lrp_like_map
from tests.lrpseg.masks.helpers import iou
from tests.lrpseg.masks.numpy_bmm import numpy_bmm


def sample_mixture(background: tuple[float, float], defect: tuple[float, float], share: float, n: int, seed: int):
    rng = np.random.default_rng(seed)
    n_defect = int(n * share)
    return np.concatenate([rng.beta(*background, n - n_defect), rng.beta(*defect, n_defect)])


def test_moments_to_beta_inverts_the_beta_moments() -> None:
    a, b = 2.5, 7.0
    mean, variance = beta_distribution.stats(a, b, moments="mv")
    component = moments_to_beta(float(mean), float(variance))
    assert component.alpha == pytest.approx(a, rel=1e-12)
    assert component.beta == pytest.approx(b, rel=1e-12)


def test_seed_procedure_recovers_a_separated_mixture() -> None:
    x = sample_mixture((2.0, 20.0), (20.0, 4.0), 0.1, 40000, seed=0)
    model = fit_beta_mixture(x)  # seed 001's E-step rules and class balancing
    assert model.converged
    np.testing.assert_allclose([model.background.alpha, model.background.beta], [2.0, 20.0], rtol=0.05)
    np.testing.assert_allclose([model.defect.alpha, model.defect.beta], [20.0, 4.0], rtol=0.05)
    assert model.weight_defect == 0.5  # balanced classes: each component's responsibilities sum to 1


@pytest.mark.parametrize(
    ("background", "defect", "share"),
    [((1.5, 30.0), (8.0, 3.0), 0.05), ((3.0, 12.0), (12.0, 3.0), 0.2)],
)
def test_plain_em_recovers_overlapping_mixtures(background, defect, share) -> None:
    x = sample_mixture(background, defect, share, 40000, seed=1)
    model = fit_beta_mixture(x, seed_rules=False, balance=False)
    assert model.converged
    np.testing.assert_allclose([model.background.alpha, model.background.beta], background, rtol=0.05)
    np.testing.assert_allclose([model.defect.alpha, model.defect.beta], defect, rtol=0.12)
    assert model.weight_defect == pytest.approx(share, abs=0.01)


def test_e_step_rules_force_certain_pixels() -> None:
    x = sample_mixture((2.0, 20.0), (6.0, 4.0), 0.1, 20000, seed=2)
    model = fit_beta_mixture(x)
    grid = np.linspace(0.001, 0.999, 999)
    r = model.defect_posterior(grid)
    above_mean = grid > model.defect.mean
    inside_background = (
        grid <= beta_distribution.ppf(BACKGROUND_QUANTILE, model.background.alpha, model.background.beta)
    ) & ~above_mean
    assert np.all(r[above_mean] == 1.0)
    assert np.all(r[inside_background] == 0.0)
    assert np.all(np.diff(r) >= -1e-12)  # separated components: the posterior rises with x


def test_bmm_separates_lrp_like_blob_maps(lrp_map: tuple[np.ndarray, np.ndarray]) -> None:
    relevance, truth = lrp_map
    result = bmm(relevance)
    recall = np.count_nonzero(result.mask & truth) / np.count_nonzero(truth)
    assert recall > 0.95
    # The 5x5 filter widens every structure by its reach (seed 001: "wider than the
    # actual cracks"), so precision is measured against the objects grown by 3 px.
    near = binary_dilation(truth, iterations=3)
    assert np.count_nonzero(result.mask & near) / np.count_nonzero(result.mask) > 0.95
    assert np.array_equal(result.mask, result.score > 0.5)


def test_bmm_separates_large_blobs_closely() -> None:
    relevance, truth = lrp_like_map((256, 256), seed=11, blobs=4, line=False)
    big = np.zeros_like(truth)
    big[40:110, 60:140] = True
    big[150:220, 30:90] = True
    relevance = np.where(big, np.abs(relevance) + 60.0, relevance)
    assert iou(bmm(relevance).mask, big | truth) > 0.85


def test_bmm_scores_the_dropped_half_zero(lrp_map: tuple[np.ndarray, np.ndarray]) -> None:
    result = bmm(lrp_map[0])
    assert np.count_nonzero(result.score) <= result.score.size // 2
    assert result.score.min() >= 0.0 and result.score.max() <= 1.0
    assert result.params["cut"] < result.params["low"] <= result.params["high"]


def test_bmm_quantile_subsample_keeps_the_full_fit() -> None:
    relevance, _ = lrp_like_map((320, 320), seed=3)  # 51200 kept values > max_fit_samples
    full, sub = bmm(relevance, max_fit_samples=None), bmm(relevance)
    assert sub.params["fit_samples"] < full.params["fit_samples"]
    assert iou(sub.mask, full.mask) > 0.99


def test_bmm_is_deterministic_and_unit_free(lrp_map: tuple[np.ndarray, np.ndarray]) -> None:
    relevance = lrp_map[0]
    first = bmm(relevance)
    assert np.array_equal(first.score, bmm(relevance.copy()).score)
    assert np.array_equal(bmm(relevance * 1e250).mask, first.mask)


@pytest.mark.parametrize(
    ("relevance", "note"),
    [
        (np.zeros((6, 6)), "constant map"),
        (np.ones((1, 1)), "constant map"),
        (-np.abs(np.random.default_rng(0).normal(size=(9, 9))) - 0.1, "no positive relevance"),
    ],
)
def test_bmm_degenerate_maps_give_an_empty_mask(relevance: np.ndarray, note: str) -> None:
    result = bmm(relevance)
    assert result.note == note
    assert not result.mask.any() and np.array_equal(result.score, np.zeros(relevance.shape))


def test_bmm_keeps_a_lone_plateau_as_the_mask() -> None:
    relevance = np.zeros((20, 20))
    relevance[5:15, 5:15] = 1.0
    result = bmm(relevance, filter_size=1)
    assert result.note == "kept values are constant"
    assert np.array_equal(result.mask, relevance > 0)


@pytest.mark.parametrize(("side", "seed"), [(128, 0), (200, 5), (320, 3)])
def test_bmm_equals_the_numpy_procedure(side: int, seed: int) -> None:
    relevance, _ = lrp_like_map((side, side), seed=seed)
    relevance[: side // 3] = 0.0  # exact zeros, as a U-Net's relevance has far from the output
    score, p, iterations = numpy_bmm(relevance)
    result = bmm(relevance)
    found = result.params
    got = (found["background"]["alpha"], found["background"]["beta"], found["defect"]["alpha"], found["defect"]["beta"])
    np.testing.assert_allclose(got, p[:4], rtol=1e-9)
    assert result.iterations == iterations
    np.testing.assert_allclose(result.score, score, rtol=0, atol=1e-9)
    assert np.array_equal(result.mask, score > 0.5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bmm_on_cuda_equals_the_cpu_fit(lrp_map: tuple[np.ndarray, np.ndarray]) -> None:
    relevance = lrp_map[0]
    cpu, gpu = bmm(relevance), bmm(torch.from_numpy(relevance).cuda())
    assert gpu.iterations == cpu.iterations
    np.testing.assert_allclose(gpu.score, cpu.score, rtol=0, atol=1e-9)


def test_quantile_is_scipy_beta_ppf_bit_for_bit() -> None:
    rng = np.random.default_rng(4)
    for a, b in np.exp(rng.uniform(-2.0, 14.0, size=(500, 2))):
        component = BetaComponent(float(a), float(b))
        assert component.quantile(BACKGROUND_QUANTILE) == float(beta_distribution.ppf(BACKGROUND_QUANTILE, a, b))


@pytest.mark.parametrize(("seed_rules", "balance"), [(True, True), (False, False)])
def test_fit_on_sorted_values_equals_the_fit_in_any_order(seed_rules: bool, balance: bool) -> None:
    # bmm fits its (sorted) quantile sample, where the E-step sets the rules' two ends directly
    x = sample_mixture((2.0, 12.0), (9.0, 3.0), 0.15, 20000, seed=5)
    ordered = fit_beta_mixture(np.sort(x), seed_rules=seed_rules, balance=balance)
    shuffled = fit_beta_mixture(np.random.default_rng(0).permutation(x), seed_rules=seed_rules, balance=balance)
    assert ordered.iterations == shuffled.iterations and ordered.converged == shuffled.converged
    got, expected = ordered.to_dict(), shuffled.to_dict()
    for part in ("background", "defect"):
        for key in ("alpha", "beta"):
            assert got[part][key] == pytest.approx(expected[part][key], rel=1e-12)
    assert got["weight_defect"] == pytest.approx(expected["weight_defect"], rel=1e-12)
    grid = np.linspace(0.001, 0.999, 999)
    np.testing.assert_allclose(ordered.defect_posterior(grid), shuffled.defect_posterior(grid), rtol=0, atol=1e-12)
