from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import uniform_filter

from lrpseg.masks.filters import mean_filter


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (3, 4), (17, 9)])
def test_mean_filter_is_the_5x5_mean_with_mirrored_edges(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    relevance = rng.normal(size=shape)
    # scipy's "reflect" mirrors about the edge (d c b a | a b c d) = numpy's "symmetric" pad.
    padded = np.pad(relevance, 2, mode="symmetric")
    expected = np.zeros(shape)
    for dy in range(5):
        for dx in range(5):
            expected += padded[dy : dy + shape[0], dx : dx + shape[1]]
    np.testing.assert_allclose(mean_filter(relevance), expected / 25, rtol=0, atol=1e-12)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 9])
@pytest.mark.parametrize("shape", [(1, 1), (3, 2), (16, 21), (4, 5, 6)])
def test_mean_filter_equals_scipy_uniform_filter(shape: tuple[int, ...], size: int) -> None:
    relevance = np.random.default_rng(size).normal(size=shape)
    expected = uniform_filter(relevance, size=size, mode="reflect")
    np.testing.assert_allclose(mean_filter(relevance, size), expected, rtol=0, atol=1e-13)
    on_tensor = mean_filter(torch.from_numpy(relevance), size)  # a tensor stays a tensor
    assert isinstance(on_tensor, torch.Tensor) and on_tensor.dtype == torch.float64
    np.testing.assert_allclose(on_tensor.numpy(), expected, rtol=0, atol=1e-13)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mean_filter_on_cuda_equals_scipy() -> None:
    relevance = np.random.default_rng(0).normal(size=(64, 48))
    found = mean_filter(torch.from_numpy(relevance).cuda())
    assert found.device.type == "cuda"
    np.testing.assert_allclose(found.cpu().numpy(), uniform_filter(relevance, size=5), rtol=0, atol=1e-13)
