"""GMM: seed 001's three-component Gaussian mixture on the 5x5-mean-filtered relevance."""

from __future__ import annotations

import warnings
from contextlib import AbstractContextManager
from functools import lru_cache
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from threadpoolctl import ThreadpoolController

from lrpseg.masks.filters import FILTER_SIZE, mean_filter
from lrpseg.masks.result import MaskResult, as_relevance_map, empty_result, scaled
from lrpseg.masks.sampling import quantile_sample

N_COMPONENTS = 3
MAX_FIT_SAMPLES = 32768


@lru_cache(maxsize=1)
def _threadpools() -> ThreadpoolController:
    return ThreadpoolController()  # scans the loaded libraries (ms): once per process


def single_threaded() -> AbstractContextManager[Any]:
    """BLAS/OpenMP pools at one thread while scikit-learn fits.

    On 1-D data thread start-up costs more than it saves, and on an oversubscribed
    2-core machine the multi-threaded fit was ten times slower.
    """
    return _threadpools().limit(limits=1)


def prepare_gmm_values(relevance: np.ndarray, filter_size: int = FILTER_SIZE) -> np.ndarray:
    """The values the GMM sees: the mean-filtered map divided by its max |value|.

    Dividing by the maximum makes scikit-learn's absolute covariance floor
    (reg_covar = 1e-6) relative to the map's range, so the fit does not depend on
    the unit of the relevance. All-zero maps stay zero.
    """
    s, _ = scaled(relevance)
    filtered, _ = scaled(mean_filter(s, filter_size))
    return filtered


def defect_component(gm: GaussianMixture, value: float) -> int:
    """The component with the largest likelihood (its own density, not weighted) at `value`."""
    means = gm.means_.ravel()
    variances = gm.covariances_.ravel()
    log_density = -0.5 * (np.log(2.0 * np.pi * variances) + (value - means) ** 2 / variances)
    return int(np.argmax(log_density))


def posterior(gm: GaussianMixture, values: np.ndarray, component: int) -> np.ndarray:
    """P(component | value) for 1-D values: what predict_proba returns, without its per-call overhead.

    Works on one flat array per component (a reduction over a short last axis is slow in numpy).
    """
    x = values.ravel()
    means = gm.means_.ravel()
    variances = gm.covariances_.ravel()
    log_norm = np.log(gm.weights_) - 0.5 * np.log(2.0 * np.pi * variances)
    log_joint = [log_norm[k] - 0.5 * (x - means[k]) ** 2 / variances[k] for k in range(means.size)]
    peak = np.maximum.reduce(log_joint)
    total = sum(np.exp(lj - peak) for lj in log_joint)
    return (np.exp(log_joint[component] - peak) / total).reshape(values.shape)


def gmm(
    relevance: Any,
    *,
    seed: int = 0,
    n_components: int = N_COMPONENTS,
    max_fit_samples: int | None = MAX_FIT_SAMPLES,
    filter_size: int = FILTER_SIZE,
) -> MaskResult:
    """Seed 001's GMM extractor.

    5x5 mean filter, 3-component GaussianMixture (k-means init, random_state=seed)
    fitted to the 1-D values (covariance_type "full", which in 1-D is one variance per
    component; on at most max_fit_samples evenly spaced quantiles of the values,
    see quantile_sample; None fits all); the defect component is the one with
    the largest likelihood at the maximal filtered value; score = its posterior
    on every pixel; mask = score > 0.5. Fewer distinct values than components
    reduce the component count (params["n_components"]). A constant map or one
    without positive filtered relevance gives an empty mask.
    """
    r = as_relevance_map(relevance)
    values = prepare_gmm_values(r, filter_size)
    lo, hi = float(values.min()), float(values.max())
    if hi == lo:
        return empty_result("gmm", r.shape, "constant map", with_score=True)
    if hi <= 0.0:
        return empty_result("gmm", r.shape, "no positive relevance", with_score=True)
    sample = quantile_sample(values, max_fit_samples).reshape(-1, 1)
    k = min(n_components, int(np.unique(sample).size))
    if k < 2:  # the subsample saw one value only: nothing to separate
        return empty_result("gmm", r.shape, "too few distinct values", with_score=True)
    gm = GaussianMixture(n_components=k, init_params="kmeans", random_state=seed)
    with single_threaded(), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(sample)
    component = defect_component(gm, hi)
    score = posterior(gm, values, component)
    return MaskResult(
        method="gmm",
        mask=score > 0.5,
        score=score,
        iterations=int(gm.n_iter_),
        converged=bool(gm.converged_),
        params={
            "n_components": k,
            "defect_component": component,
            "means": gm.means_.ravel().tolist(),
            "variances": gm.covariances_.ravel().tolist(),
            "weights": gm.weights_.tolist(),
            "fit_samples": int(sample.shape[0]),
        },
    )
