"""Seed 000's threshold + log transfer: formula, oddness, monotonicity, thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from lrpseg.masks.synthetic import lrp_like_map
from lrpseg.render import RenderInputError, inverse_transfer, log_transfer, resolve_tau
from lrpseg.render.transfer import DEFAULT_MASS, coloured_share, mass_tau


@pytest.fixture
def relevance() -> np.ndarray:
    return lrp_like_map((64, 64), seed=2)[0]


def test_matches_the_seed_formula(relevance: np.ndarray) -> None:
    tau = 0.7
    a = np.abs(relevance)
    expected = np.where(a >= tau, np.sign(relevance) * np.log1p(a / tau) / np.log1p(a.max() / tau), 0.0)
    np.testing.assert_allclose(log_transfer(relevance, tau=tau), expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "threshold", [{}, {"mass": 0.5}, {"percentile": 90.0}, {"fraction": 0.01}, {"tau": 2.0}, {"mode": "linear"}]
)
def test_is_odd_and_monotone(relevance: np.ndarray, threshold: dict) -> None:
    f = log_transfer(relevance, **threshold)
    np.testing.assert_array_equal(log_transfer(-relevance, **threshold), -f)
    order = np.argsort(relevance, axis=None)
    assert np.all(np.diff(f.ravel()[order]) >= 0)
    assert f.min() >= -1.0 and f.max() <= 1.0
    assert np.abs(f).max() == 1.0  # the largest |R| reaches the end of the scale


def test_values_below_tau_are_zeroed(relevance: np.ndarray) -> None:
    tau = resolve_tau(relevance, percentile=80.0)
    f = log_transfer(relevance, percentile=80.0)
    below = np.abs(relevance) < tau
    assert np.all(f[below] == 0.0) and np.all(f[~below] != 0.0)
    assert below.mean() == pytest.approx(0.8, abs=0.01)


def test_tau_resolution(relevance: np.ndarray) -> None:
    a = np.abs(relevance)
    assert resolve_tau(relevance) == mass_tau(a, DEFAULT_MASS) == resolve_tau(relevance, mass=0.9)
    assert resolve_tau(relevance, percentile=99.0) == pytest.approx(np.percentile(a, 99.0))
    assert resolve_tau(relevance, fraction=0.05) == pytest.approx(0.05 * a.max())
    assert resolve_tau(relevance, fraction=0.0) == pytest.approx(a[a > 0].min())  # "no threshold"
    sparse = np.zeros((10, 10))
    sparse[0, :3] = [1.0, -2.0, 4.0]
    assert resolve_tau(sparse, percentile=50.0) == 2.0  # percentile of the non-zero |R|
    assert resolve_tau(np.zeros((3, 3))) == 0.0


@pytest.mark.parametrize("mass", [0.0, 0.3, 0.9, 0.95, 1.0])
def test_mass_tau_keeps_the_fewest_pixels_that_hold_the_mass(relevance: np.ndarray, mass: float) -> None:
    a = np.abs(relevance).ravel()
    tau = resolve_tau(relevance, mass=mass)
    kept = np.sort(a[a >= tau])
    # the kept pixels hold the mass; without the smallest kept one they do not (exact sums)
    assert kept.sum() >= mass * a.sum() * (1 - 1e-12)
    if 0.0 < mass < 1.0:
        assert kept[1:].sum() < mass * a.sum()
    elif mass == 0.0:
        assert tau == a.max()
    else:
        assert tau == a[a > 0].min()
    assert resolve_tau(relevance * 1e300, mass=mass) == pytest.approx(tau * 1e300, rel=1e-12)


def test_mass_threshold_colours_few_pixels_of_a_concentrated_map() -> None:
    r = np.full((50, 50), 1e-3)
    r[20:25, 20:25] = 10.0  # 1 % of the pixels hold 99 % of |R|
    tau = resolve_tau(r)
    assert tau == 10.0 and coloured_share(r, tau) == 0.01
    assert coloured_share(r, resolve_tau(r, percentile=50.0)) == 1.0  # seed 000's median colours all
    with pytest.raises(RenderInputError, match="mass"):
        resolve_tau(r, mass=1.5)


def test_extreme_scales_do_not_overflow(relevance: np.ndarray) -> None:
    reference = log_transfer(relevance)
    for scale in (1e-300, 1e300):
        np.testing.assert_allclose(log_transfer(relevance * scale), reference, atol=1e-12)
    f = log_transfer(relevance, tau=1e-310)  # max|R| / tau overflows float64
    assert np.isfinite(f).all() and np.abs(f).max() == 1.0


def test_linear_mode_and_zero_map(relevance: np.ndarray) -> None:
    np.testing.assert_allclose(log_transfer(relevance, mode="linear"), relevance / np.abs(relevance).max())
    assert np.array_equal(log_transfer(np.zeros((4, 4))), np.zeros((4, 4)))


def test_inverse_transfer_recovers_relevance(relevance: np.ndarray) -> None:
    tau, peak = 0.5, float(np.abs(relevance).max())
    kept = relevance[np.abs(relevance) >= tau]
    values = log_transfer(relevance, tau=tau)[np.abs(relevance) >= tau]
    np.testing.assert_allclose(inverse_transfer(values, peak=peak, tau=tau), kept, rtol=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tau": 1.0, "percentile": 5.0}, "one of"),
        ({"percentile": 101.0}, "percentile"),
        ({"fraction": 1.5}, "fraction"),
        ({"tau": -1.0}, "tau"),
        ({"mode": "sqrt"}, "mode"),
    ],
)
def test_bad_settings_are_rejected(relevance: np.ndarray, kwargs: dict, message: str) -> None:
    with pytest.raises(RenderInputError, match=message):
        log_transfer(relevance, **kwargs)


def test_non_finite_relevance_is_rejected() -> None:
    with pytest.raises(RenderInputError, match="NaN"):
        log_transfer(np.array([[0.0, np.nan]]))


@pytest.mark.parametrize("threshold", [{}, {"mass": 0.5}, {"percentile": 90.0}, {"fraction": 0.01}])
def test_a_resolved_tau_draws_what_its_rule_draws(relevance: np.ndarray, threshold: dict) -> None:
    # a job resolves tau once (display_scale) and hands it to every picture
    tau = resolve_tau(relevance, **threshold)
    np.testing.assert_array_equal(log_transfer(relevance, tau=tau), log_transfer(relevance, **threshold))
    for bad in (0.0, np.nan, np.inf):
        with pytest.raises(RenderInputError, match="tau"):
            log_transfer(relevance, tau=bad)
