"""The subsample the mixture models are fitted on: evenly spaced order statistics."""

from __future__ import annotations

import numpy as np


def quantile_sample(values: np.ndarray, max_samples: int | None) -> np.ndarray:
    """At most max_samples values that keep the distribution of `values` (1-D).

    Maps with more values return the order statistics at ranks (i + 1/2) n / m,
    i.e. the empirical quantiles on an even grid, sorted. Their distribution
    function is within 1/m of the full one (a random sample is only within
    ~1/sqrt(m)), so a 1-D mixture fitted on them lands on the full fit's
    solution; with a random sample of the same size the 3-component GMM fell into
    another local optimum on some maps. Smaller inputs are returned unchanged,
    in their original order.
    """
    values = np.asarray(values).ravel()
    n = values.size
    if max_samples is None or n <= max_samples:
        return values
    if max_samples < 1:
        raise ValueError(f"max_fit_samples must be positive, got {max_samples}")
    ranks = ((np.arange(max_samples) + 0.5) * (n / max_samples)).astype(np.int64)
    return np.sort(values)[ranks]
