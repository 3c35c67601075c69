"""Simple: the iterative (isodata) threshold of seed 001 on the normalised relevance."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from lrpseg.masks.result import MaskResult, as_relevance_map, empty_result, host, scaled
from lrpseg.masks.sampling import sort_values

MAX_ITER = 1000


def isodata_threshold(values: np.ndarray | Tensor, *, max_iter: int = MAX_ITER) -> tuple[float, int, bool]:
    """Iterate t <- (mean(values <= t) + mean(values > t)) / 2 from t = mean(values).

    The split puts values equal to t in the lower class, as skimage's
    threshold_isodata does, and stops when the split no longer changes, so the
    returned t is an exact fixed point: t = (mean_low + mean_high) / 2 of the
    split it makes. Returns (threshold, iterations, converged). A constant input
    returns its value with 0 iterations. One sort and prefix sums (on the values'
    device; sequential on the CPU, as numpy adds) make each iteration O(log n).
    """
    x = values if isinstance(values, Tensor) else torch.from_numpy(np.asarray(values))
    ordered = sort_values(x.to(torch.float64))
    n = ordered.numel()
    prefix = torch.cat([ordered.new_zeros(1), torch.cumsum(ordered, 0)]).cpu().numpy()

    def count_low(t: float) -> int:  # count of values <= t
        return int(torch.searchsorted(ordered, ordered.new_tensor([t]), right=True).item())

    t = float(prefix[-1] / n)
    n_low = count_low(t)
    if n_low in (0, n):
        return t, 0, True
    for iteration in range(1, max_iter + 1):
        mean_low = prefix[n_low] / n_low
        mean_high = (prefix[-1] - prefix[n_low]) / (n - n_low)
        t = float((mean_low + mean_high) / 2.0)
        n_new = count_low(t)
        if n_new == n_low:
            return t, iteration, True
        n_low = n_new
    return t, max_iter, False


def simple(relevance: Any, *, max_iter: int = MAX_ITER) -> MaskResult:
    """Seed 001's Simple extractor: min-max normalise, isodata threshold, mask = value > t.

    Runs on the relevance's device. A constant map or one without positive relevance gives an
    empty mask (note says why).
    """
    r = as_relevance_map(relevance)
    s, scale = scaled(r)
    lo, hi = float(s.min()), float(s.max())
    if hi == lo:
        return empty_result("simple", tuple(r.shape), "constant map", with_score=False)
    if hi <= 0.0:
        return empty_result("simple", tuple(r.shape), "no positive relevance", with_score=False)
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
