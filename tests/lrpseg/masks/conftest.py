"""LRP-like relevance maps shared by the mask tests."""

from __future__ import annotations

import numpy as np
import pytest

from lrpseg.masks.synthetic import lrp_like_map


@pytest.fixture(params=[0, 1, 2], ids=lambda s: f"map{s}")
def lrp_map(request: pytest.FixtureRequest) -> tuple[np.ndarray, np.ndarray]:
    """(relevance, truth) at 128x128: heavy-tailed, ~38 % negative, blobs and a thin line."""
    return lrp_like_map((128, 128), seed=request.param)
