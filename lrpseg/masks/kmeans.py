"""scikit-learn's k-means for a 1-D sample, without KMeans.fit's per-call cost.

GaussianMixture(init_params="kmeans") starts from the labels of KMeans(n_clusters=k, n_init=1,
random_state=seed).fit(x). On the GMM's fit sample (32768 values) that call cost as much as the
EM itself, little of it clustering: input checks, a Python set() of every label (for a warning),
thread-pool set-up. Here the same steps run with the same arithmetic, so the labels are
scikit-learn's (tests compare them):

- the start is scikit-learn's own public kmeans_plusplus on the centred sample, as KMeans.fit
  calls it (the same random numbers from the same RandomState);
- Lloyd's iterations are written out as scikit-learn's Cython kernel computes them on one thread
  (the GMM runs k-means single-threaded): distances |c|^2 - 2 x c (its GEMM), the first closest
  centre, per-cluster sums added in sample order (np.bincount's loop), centres times 1 / count,
  stop on unchanged labels or a squared centre shift <= tol x the sample's variance, then (without
  strict convergence) the labels of the final centres.

A cluster that empties is relocated by scikit-learn in a way not copied here: kmeans_labels then
runs KMeans itself.
"""

from __future__ import annotations

import warnings
from contextlib import AbstractContextManager
from functools import lru_cache
from typing import Any

import numpy as np
from sklearn.cluster import KMeans, kmeans_plusplus
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.extmath import row_norms
from threadpoolctl import ThreadpoolController

MAX_ITER = 300  # KMeans' defaults
TOL = 1e-4


@lru_cache(maxsize=1)
def _threadpools() -> ThreadpoolController:
    return ThreadpoolController()  # scans the loaded libraries (ms): once per process


def single_threaded() -> AbstractContextManager[Any]:
    """BLAS/OpenMP pools at one thread while scikit-learn's k-means runs.

    On 1-D data thread start-up costs more than it saves, and on an oversubscribed
    2-core machine the multi-threaded fit was ten times slower.
    """
    return _threadpools().limit(limits=1)


def kmeans_labels(values: np.ndarray, k: int, seed: int) -> np.ndarray:
    """KMeans(n_clusters=k, n_init=1, random_state=np.random.RandomState(seed)).fit(values).labels_ (int32)
    of a 1-D sample, as scikit-learn computes it on one thread (module docstring)."""
    with single_threaded():
        labels = lloyd_labels(values, k, seed)
        if labels is None:  # an emptied cluster: scikit-learn's relocation
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                labels = (
                    KMeans(n_clusters=k, n_init=1, random_state=np.random.RandomState(seed))
                    .fit(np.asarray(values, dtype=np.float64).reshape(-1, 1))
                    .labels_
                )
    return np.asarray(labels, dtype=np.int32)


def lloyd_labels(values: np.ndarray, k: int, seed: int) -> np.ndarray | None:
    """KMeans.fit's labels by its own steps (k-means++ start, Lloyd), None where a cluster empties."""
    x = np.array(values, dtype=np.float64).reshape(-1, 1)  # KMeans.fit's copy
    tol = float(np.mean(np.var(x, axis=0)) * TOL)
    x -= x.mean(axis=0)
    start, _ = kmeans_plusplus(
        x, k, x_squared_norms=row_norms(x, squared=True), random_state=np.random.RandomState(seed)
    )
    x, centres = x[:, 0], start[:, 0].copy()
    labels_old = np.full(x.size, -1, dtype=np.int32)
    for _ in range(MAX_ITER):
        labels = closest(x, centres)
        counts = np.bincount(labels, minlength=k).astype(np.float64)
        if not counts.all():
            return None
        new = np.bincount(labels, weights=x, minlength=k) * (1.0 / counts)
        shift = np.sqrt((new - centres) * (new - centres))
        centres = new
        if np.array_equal(labels, labels_old):
            return labels  # strict convergence
        if (shift**2).sum() <= tol:
            break
        labels_old = labels
    return closest(x, centres)


def closest(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the closest centre (the first of equals), by scikit-learn's |c|^2 - 2 x c."""
    squared = centres * centres
    best = squared[0] - 2.0 * (x * centres[0])
    labels = np.zeros(x.size, dtype=np.int32)
    for j in range(1, centres.size):  # a pass per centre: argmin across a short axis is slower
        distance = squared[j] - 2.0 * (x * centres[j])
        nearer = distance < best
        np.putmask(labels, nearer, j)
        np.minimum(best, distance, out=best)
    return labels
