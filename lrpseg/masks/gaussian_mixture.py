"""GMM: seed 001's three-component Gaussian mixture on the 5x5-mean-filtered relevance.

The EM runs in torch on the relevance's device (float64, batched over maps); it is
scikit-learn's GaussianMixture (covariance "full", which in 1-D is one variance per component;
reg_covar, tol, max_iter and the lower bound as there), started from scikit-learn's own k-means
labels, so the fit equals GaussianMixture(init_params="kmeans", random_state=seed).fit. Only the
k-means start (n_init=1, on the fit sample of at most MAX_FIT_SAMPLES values) runs on the CPU
(lrpseg.masks.kmeans: scikit-learn's steps without KMeans.fit's per-call cost).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lrpseg.masks import kmeans
from lrpseg.masks.filters import FILTER_SIZE
from lrpseg.masks.prepared import prepare
from lrpseg.masks.result import MaskResult, empty_result, host, scaled
from lrpseg.masks.sampling import quantile_sample, sort_order

N_COMPONENTS = 3
MAX_FIT_SAMPLES = 32768
REG_COVAR = 1e-6  # scikit-learn's defaults
TOL = 1e-3
MAX_ITER = 100
# values per step of `posterior`: its (K, chunk) float64 temporaries were ~50 B/px at 2048², the
# masks' peak; a power of two, so on one thread each value takes the same vectorised path as in one step
POSTERIOR_CHUNK = 1 << 18
LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class GaussianFit:
    """Fitted 1-D mixtures, one row per map: (B, K) means, variances (reg_covar included), weights."""

    means: Tensor
    variances: Tensor
    weights: Tensor
    iterations: list[int]
    converged: list[bool]

    @classmethod
    def of(cls, gm: Any) -> GaussianFit:
        """A fitted scikit-learn GaussianMixture (1-D) as a one-row GaussianFit on the CPU."""

        def row(a: Any) -> Tensor:
            return torch.as_tensor(np.asarray(a, dtype=np.float64).ravel())[None]

        return cls(row(gm.means_), row(gm.covariances_), row(gm.weights_), [int(gm.n_iter_)], [bool(gm.converged_)])


def weighted_log_prob(x: Tensor, means: Tensor, variances: Tensor, weights: Tensor) -> Tensor:
    """log N(x | mean_k, variance_k) + log weight_k for x (B, N) -> (B, K, N), as scikit-learn writes it
    (precision Cholesky p, y = x p - mean p), in two passes: y, then -y^2 / 2 + (log p - log(2 pi) / 2 + log weight).

    Components on the middle axis: reductions over K then run across K contiguous rows, which
    is several times faster than over a short last axis."""
    precision_chol = (1.0 / torch.sqrt(variances))[..., None]  # (B, K, 1)
    y = torch.addcmul(-(means[..., None] * precision_chol), x[:, None, :], precision_chol)
    offset = torch.log(precision_chol) - 0.5 * LOG_2PI + torch.log(weights)[..., None]
    return torch.addcmul(offset, y, y, value=-0.5)


def normalise(log_prob: Tensor) -> tuple[Tensor, Tensor]:
    """(responsibilities (B, K, N), log-likelihood (B, N)) from weighted log probabilities, written into
    log_prob: scikit-learn's exp(log_prob - logsumexp), as softmax computes it (max shift, exp, divide by
    the sum), logsumexp = max + log(sum). In place: 10-20 % faster than torch.softmax here."""
    top = log_prob.amax(1, keepdim=True)
    shifted = log_prob.sub_(top).exp_()
    total = shifted.sum(1, keepdim=True)
    return shifted.div_(total), (top + total.log_())[:, 0]


def moment_columns(x: Tensor, counts: Tensor | None = None) -> Tensor:
    """(B, 3, N): each value's count, count x and count x², the rows every M-step sums."""
    c = counts if counts is not None else torch.ones_like(x)
    cx = c * x
    return torch.stack([c, cx, cx * x], 1)


def m_step(resp: Tensor, columns: Tensor, reg_covar: float) -> tuple[Tensor, Tensor, Tensor]:
    """(nk, means, variances) from responsibilities (B, K, N), scikit-learn's _estimate_gaussian_parameters,
    with the sums over the (count-weighted) values as one matrix product with `columns` (moment_columns):
    variance = Σ r x² / nk - mean², where scikit-learn sums r (x - mean)². One pass, not seven; the
    one-pass form loses at most eps (mean² + variance) to rounding, which reg_covar (1e-6) on values
    scaled to |x| <= 1 (gmm's input) keeps below 1e-9 of the variance."""
    sums = torch.matmul(resp, columns.transpose(1, 2))  # (B, K, 3); the transposed operand: 2x faster
    nk = sums[..., 0] + 10 * torch.finfo(resp.dtype).eps
    means = sums[..., 1] / nk
    variances = sums[..., 2] / nk - means.square() + reg_covar
    return nk, means, variances


def fit_gaussian_mixture(
    x: Tensor,
    resp: Tensor,
    counts: Tensor | None = None,
    *,
    reg_covar: float = REG_COVAR,
    tol: float = TOL,
    max_iter: int = MAX_ITER,
) -> GaussianFit:
    """EM for 1-D Gaussian mixtures from initial responsibilities: x (B, N), resp (B, K, N), on their device.

    Each row runs scikit-learn's loop: E-step, M-step, stop once the lower bound (mean log
    likelihood) changes by less than tol. Rows that converged keep their parameters while the
    others iterate (one host sync per iteration for the stop test). counts (B, N): each value
    stands for that many equal samples (what `distinct` makes of a sample with repeats, e.g. the
    exact zeros far from a U-Net's explained output): the same fit on fewer values.
    """
    x = x.to(torch.float64)
    counts = counts.to(torch.float64) if counts is not None else None
    n_samples = counts.sum(1, keepdim=True) if counts is not None else x.new_full((x.shape[0], 1), x.shape[1])
    columns = moment_columns(x, counts)
    nk, means, variances = m_step(resp.to(torch.float64), columns, reg_covar)
    weights = nk / n_samples
    batch = x.shape[0]
    lower = torch.full((batch,), -math.inf, dtype=torch.float64, device=x.device)
    active = torch.ones(batch, dtype=torch.bool, device=x.device)
    iterations, converged = [0] * batch, [False] * batch
    for n_iter in range(1, max_iter + 1):
        resp, norm = normalise(weighted_log_prob(x, means, variances, weights))
        nk_new, means_new, variances_new = m_step(resp, columns, reg_covar)
        keep = active[:, None]
        means = torch.where(keep, means_new, means)
        variances = torch.where(keep, variances_new, variances)
        weights = torch.where(keep, nk_new / nk_new.sum(1, keepdim=True), weights)
        bound = norm.mean(1) if counts is None else (norm * counts).sum(1) / n_samples[:, 0]
        change = (bound - lower).abs()
        lower = torch.where(active, bound, lower)
        done = (active & (change < tol)).tolist()
        for i, was_active in enumerate(active.tolist()):
            if was_active:
                iterations[i] = n_iter
                converged[i] = done[i]
        active = active & ~torch.tensor(done, device=x.device)
        if not bool(active.any()):
            break
    return GaussianFit(means, variances, weights, iterations, converged)


def kmeans_labels(sample: Tensor, k: int, seed: int) -> Tensor:
    """scikit-learn's k-means labels (N,) of a 1-D sample, the start GaussianMixture's
    init_params="kmeans" builds (computed on the CPU, returned on the sample's device)."""
    labels = kmeans.kmeans_labels(sample.detach().cpu().numpy(), k, seed)
    return torch.from_numpy(labels.astype(np.int64)).to(sample.device)


def one_hot(labels: Tensor, k: int) -> Tensor:
    """(1, k, N) float64 responsibilities of labels (N,)."""
    return torch.nn.functional.one_hot(labels, k).T.to(torch.float64)[None]


def kmeans_responsibilities(sample: Tensor, k: int, seed: int) -> Tensor:
    """(1, k, N) one-hot responsibilities of scikit-learn's k-means start, on the sample's device."""
    return one_hot(kmeans_labels(sample, k, seed), k)


def distinct(sample: Tensor, *, ordered: bool = False) -> tuple[Tensor, Tensor | None, Tensor]:
    """(values (1, M), counts (1, M) or None where every value occurs once, first (M,)): each distinct
    value of a 1-D sample once, how often it occurs and where it first occurs in the sample (equal
    values share a k-means cluster). ordered: the sample is sorted already (a quantile sample)."""
    if ordered:
        values, counts = torch.unique_consecutive(sample, return_counts=True)
        order = None
    else:
        order = sort_order(sample)
        ordered_sample = sample[order]
        values, counts = torch.unique_consecutive(ordered_sample, return_counts=True)
    first = torch.cumsum(counts, 0) - counts
    if order is not None:
        first = order[first]
    return values[None], (counts[None] if values.numel() < sample.numel() else None), first


def prepare_gmm_values(relevance: Any, filter_size: int = FILTER_SIZE) -> Tensor:
    """The values the GMM sees: the mean-filtered map divided by its max |value|.

    Dividing by the maximum makes scikit-learn's absolute covariance floor
    (reg_covar = 1e-6) relative to the map's range, so the fit does not depend on
    the unit of the relevance. All-zero maps stay zero.
    """
    filtered, _ = scaled(prepare(relevance).filtered(filter_size))
    return filtered


def defect_component(fit: GaussianFit, value: float, row: int = 0) -> int:
    """The component with the largest likelihood (its own density, not weighted) at `value`."""
    means, variances = fit.means[row], fit.variances[row]
    log_density = -0.5 * (torch.log(2.0 * math.pi * variances) + (value - means) ** 2 / variances)
    return int(torch.argmax(log_density))


def posterior(fit: GaussianFit, values: Tensor | np.ndarray, component: int, row: int = 0) -> Tensor | np.ndarray:
    """P(component | value) for 1-D values (what predict_proba returns), on the values' device;
    a numpy array gives a numpy array."""
    if not isinstance(values, Tensor):
        return host(posterior(fit, torch.from_numpy(np.asarray(values, dtype=np.float64)), component, row))
    device = values.device
    means, variances, weights = (t[row].to(device)[None] for t in (fit.means, fit.variances, fit.weights))
    flat = values.reshape(1, -1)
    out = torch.empty(flat.shape[1], dtype=torch.float64, device=device)
    for start in range(0, flat.shape[1], POSTERIOR_CHUNK):
        part = flat[:, start : start + POSTERIOR_CHUNK]
        out[start : start + part.shape[1]] = torch.softmax(weighted_log_prob(part, means, variances, weights), 1)[
            0, component
        ]
    return out.reshape(values.shape)


def gmm(
    relevance: Any,
    *,
    seed: int = 0,
    n_components: int = N_COMPONENTS,
    max_fit_samples: int | None = MAX_FIT_SAMPLES,
    filter_size: int = FILTER_SIZE,
) -> MaskResult:
    """Seed 001's GMM extractor, on the relevance's device.

    5x5 mean filter, 3-component Gaussian mixture (scikit-learn's k-means start with
    random_state=seed, then EM as GaussianMixture runs it, module docstring) fitted to the 1-D
    values (on at most max_fit_samples evenly spaced quantiles of the values, see
    quantile_sample; None fits all); the defect component is the one with
    the largest likelihood at the maximal filtered value; score = its posterior
    on every pixel; mask = score > 0.5. Fewer distinct values than components
    reduce the component count (params["n_components"]). A constant map or one
    without positive filtered relevance gives an empty mask.
    """
    prepared = prepare(relevance)
    shape = prepared.shape
    filtered, ordered = prepared.filtered(filter_size), prepared.sorted_filtered(filter_size)
    # The filtered map divided by its max |value| (prepare_gmm_values); sorted the same way.
    lo, hi = torch.stack([ordered[0], ordered[-1]]).tolist()
    peak = max(-lo, hi)
    if hi == lo:
        return empty_result("gmm", shape, "constant map", with_score=True)
    if hi <= 0.0:
        return empty_result("gmm", shape, "no positive relevance", with_score=True)
    values, hi = filtered / peak, hi / peak
    sample = quantile_sample(values.reshape(-1), max_fit_samples, ordered=ordered / peak)
    subsampled = sample.numel() < values.numel()  # then the sample is sorted
    unique, counts, first = distinct(sample, ordered=subsampled)
    k = min(n_components, unique.numel())
    if k < 2:  # the subsample saw one value only: nothing to separate
        return empty_result("gmm", shape, "too few distinct values", with_score=True)
    resp = one_hot(kmeans_labels(sample, k, seed)[first], k)
    fit = fit_gaussian_mixture(unique, resp, counts)
    component = defect_component(fit, hi)
    score = host(posterior(fit, values, component))
    return MaskResult(
        method="gmm",
        mask=score > 0.5,
        score=score,
        iterations=fit.iterations[0],
        converged=fit.converged[0],
        params={
            "n_components": k,
            "defect_component": component,
            "means": fit.means[0].tolist(),
            "variances": fit.variances[0].tolist(),
            "weights": fit.weights[0].tolist(),
            "fit_samples": int(sample.numel()),
        },
    )
