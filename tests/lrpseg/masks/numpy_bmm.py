"""Seed 001's BMM written out in numpy/scipy (the implementation before the extractors moved to
torch): the reference the device version must equal."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter
from scipy.special import betaln, expit
from scipy.stats import beta as beta_distribution

from lrpseg.masks.beta_mixture import BACKGROUND_QUANTILE, EDGE, MAX_CONCENTRATION, ROUNDING, TOL
from lrpseg.masks.isodata import isodata_threshold
from lrpseg.masks.sampling import quantile_sample

Params = tuple[float, float, float, float, float]  # background alpha, beta; defect alpha, beta; defect weight


def moments(x: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    mean = min(max(float(np.sum(w * x)) / float(w.sum()), EDGE), 1.0 - EDGE)
    variance = float(np.sum(w * (x - float(np.sum(w * x)) / float(w.sum())) ** 2)) / float(w.sum())
    limit = mean * (1.0 - mean)
    variance = min(max(variance, limit / (MAX_CONCENTRATION + 1.0)), 0.999 * limit)
    c = limit / variance - 1.0
    return mean * c, (1.0 - mean) * c


def posterior(p: Params, x: np.ndarray) -> np.ndarray:
    ab, bb, ad, bd, w = p
    lx, l1 = np.log(x), np.log1p(-x)
    defect = (ad - 1) * lx + (bd - 1) * l1 - betaln(ad, bd)
    background = (ab - 1) * lx + (bb - 1) * l1 - betaln(ab, bb)
    r = expit(np.log(w) + defect - np.log1p(-w) - background)
    r = np.where(x <= beta_distribution.ppf(BACKGROUND_QUANTILE, ab, bb), 0.0, r)
    return np.where(x > ad / (ad + bd), 1.0, r)


def fit(x: np.ndarray, max_iter: int = 200) -> tuple[Params, int]:
    x = np.clip(x, EDGE, 1.0 - EDGE)
    high = x > isodata_threshold(x)[0]
    p: Params = (*moments(x, (~high).astype(float)), *moments(x, high.astype(float)), 0.5)
    for iteration in range(1, max_iter + 1):
        r = posterior(p, x)
        d, b = moments(x, r), moments(x, 1.0 - r)
        if d[0] / sum(d) < b[0] / sum(b):
            d, b = b, d
        new: Params = (*b, *d, 0.5)
        if max(abs(n - o) / max(abs(o), 1e-12) for o, n in zip(p, new)) <= TOL:
            return new, iteration
        p = new
    return p, max_iter


def numpy_bmm(relevance: np.ndarray, max_fit_samples: int = 32768) -> tuple[np.ndarray, Params, int]:
    """(score, fitted parameters, iterations) of seed 001's BMM on a map with positive relevance."""
    s = relevance / np.abs(relevance).max()
    filtered = uniform_filter(s, size=5, mode="reflect")
    filtered = np.where(filtered <= ROUNDING, 0.0, filtered)
    keep = filtered > np.quantile(filtered, 0.5)
    kept = filtered[keep]
    x = (kept - kept.min()) / (kept.max() - kept.min())
    p, iterations = fit(quantile_sample(x, max_fit_samples))
    score = np.zeros(relevance.shape)
    score[keep] = posterior(p, np.clip(x, EDGE, 1.0 - EDGE))
    return score, p, iterations
