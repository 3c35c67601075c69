"""Simple: the iterative (isodata) threshold of seed 001 on the normalised relevance."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from lrpseg.masks.prepared import prepare
from lrpseg.masks.result import MaskResult, empty_result, host

MAX_ITER = 1000


def isodata_threshold(values: np.ndarray | Tensor, *, max_iter: int = MAX_ITER) -> tuple[float, int, bool]:
    """Iterate t <- (mean(values <= t) + mean(values > t)) / 2 from t = mean(values).

    The split puts values equal to t in the lower class, as skimage's
    threshold_isodata does, and stops when the split no longer changes, so the
    returned t is an exact fixed point: t = (mean_low + mean_high) / 2 of the
    split it makes. Returns (threshold, iterations, converged). A constant input
    returns its value with 0 iterations. Each iteration is one split and one masked
    sum on the values' device (one host sync): real maps need about ten, which costs
    less than the one sort a prefix-sum search would need.
    """
    x = values if isinstance(values, Tensor) else torch.from_numpy(np.asarray(values))
    x = x.reshape(-1).to(torch.float64)
    n = x.numel()
    t = float(x.sum()) / n
    n_low, sum_low, sum_high = split_sums(x, t)
    if n_low in (0, n):
        return t, 0, True
    for iteration in range(1, max_iter + 1):
        t = (sum_low / n_low + sum_high / (n - n_low)) / 2.0
        n_new, sum_low, sum_high = split_sums(x, t)
        if n_new == n_low:
            return t, iteration, True
        n_low = n_new
    return t, max_iter, False


def split_sums(x: Tensor, t: float) -> tuple[int, float, float]:
    """(count of the values <= t, their sum, the sum of the others), in one host sync. Both sums
    are taken directly: the total minus one loses digits when the other class is small."""
    low = x <= t
    count, below, above = torch.stack(
        [low.sum().to(x.dtype), torch.where(low, x, 0.0).sum(), torch.where(low, 0.0, x).sum()]
    ).tolist()
    return int(count), below, above


def simple(relevance: Any, *, max_iter: int = MAX_ITER) -> MaskResult:
    """Seed 001's Simple extractor: min-max normalise, isodata threshold, mask = value > t.

    Runs on the relevance's device. A constant map or one without positive relevance gives an
    empty mask (note says why).
    """
    prepared = prepare(relevance)
    s, scale = prepared.scaled, prepared.scale
    lo, hi = prepared.scaled_range
    if hi == lo:
        return empty_result("simple", prepared.shape, "constant map", with_score=False)
    if hi <= 0.0:
        return empty_result("simple", prepared.shape, "no positive relevance", with_score=False)
    x = (s - lo) / (hi - lo)
    t, iterations, converged = isodata_threshold(x, max_iter=max_iter)
    return MaskResult(
        method="simple",
        mask=host(x > t),
        score=None,
        threshold=(lo + t * (hi - lo)) * scale,
        iterations=iterations,
        converged=converged,
        params={"normalised_threshold": t},
    )
