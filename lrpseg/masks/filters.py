"""The 5x5 mean filter seed 001 applies before GMM and BMM."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter

FILTER_SIZE = 5
# scipy's default: the map is mirrored about its edge (d c b a | a b c d), so border
# pixels are averaged with their own neighbourhood instead of with zeros.
FILTER_MODE = "reflect"


def mean_filter(relevance: np.ndarray, size: int = FILTER_SIZE) -> np.ndarray:
    """size x size box mean of a float64 map (boundary mode "reflect")."""
    if size <= 1:
        return relevance.astype(np.float64, copy=True)
    return uniform_filter(relevance.astype(np.float64, copy=False), size=size, mode=FILTER_MODE)
