from __future__ import annotations

import numpy as np
import pytest
import torch

from lrpseg.masks.sampling import quantile_sample, sort_order, sort_setting_zeros_aside


def test_quantile_sample_keeps_the_distribution_within_one_over_m() -> None:
    values = np.random.default_rng(0).standard_t(2, size=100_003)
    sample = quantile_sample(values, 1000)
    assert sample.size == 1000 and np.all(np.diff(sample) >= 0)
    grid = np.quantile(values, np.linspace(0.001, 0.999, 200))
    full_cdf = np.searchsorted(np.sort(values), grid, side="right") / values.size
    sample_cdf = np.searchsorted(sample, grid, side="right") / sample.size
    assert np.max(np.abs(full_cdf - sample_cdf)) <= 1 / 1000 + 1e-9


def test_small_inputs_pass_through_in_order() -> None:
    values = np.array([3.0, 1.0, 2.0])
    assert np.array_equal(quantile_sample(values, 10), values)
    assert np.array_equal(quantile_sample(values, None), values)


def test_nonpositive_sample_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_fit_samples"):
        quantile_sample(np.arange(10.0), 0)


@pytest.mark.parametrize("zero_share", [0.0, 0.2, 0.25, 0.72, 1.0])
def test_sorting_with_zeros_set_aside_equals_numpy(zero_share: float) -> None:
    rng = np.random.default_rng(int(zero_share * 100))
    a = rng.normal(size=4096)
    a[rng.random(4096) < zero_share] = 0.0
    a[:3] = -0.0  # signed zeros compare equal
    got = sort_setting_zeros_aside(a)
    assert got.dtype == a.dtype and np.array_equal(got, np.sort(a))
    assert np.array_equal(sort_setting_zeros_aside(a[:0]), a[:0])


def test_sort_order_sorts_like_torch() -> None:
    values = torch.from_numpy(np.random.default_rng(4).integers(0, 50, 1000).astype(np.float64))  # many ties
    order = sort_order(values)
    assert torch.equal(values[order], torch.sort(values).values)
    assert sorted(order.tolist()) == list(range(1000)) and order.dtype == torch.int64
