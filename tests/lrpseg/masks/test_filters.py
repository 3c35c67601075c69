from __future__ import annotations

import numpy as np
import pytest

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
