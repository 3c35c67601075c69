"""BMM: seed 001's two-component Beta mixture with its modified EM.

The per-pixel work (E-step responsibilities, the M-step's weighted sums, the posterior on the
map) runs in torch on the relevance's device, in float64; the five scalar parameters are updated
on the host from those sums (one sync per EM iteration), exactly as before. An iteration is a
few passes over the values: the log posterior ratio is one matrix-vector product of the fixed
(log x, log(1 - x)) columns, and each weighted sum one dot product.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.special import betaincinv, betaln
from torch import Tensor

from lrpseg.masks.filters import FILTER_SIZE
from lrpseg.masks.isodata import isodata_threshold
from lrpseg.masks.prepared import prepare
from lrpseg.masks.result import MaskResult, empty_result, host
from lrpseg.masks.sampling import quantile_sample

BACKGROUND_QUANTILE = 0.9  # the background component's one-sided (lower) interval
DROP_SHARE = 0.5  # seed 001 drops the lowest 50 % of the clipped, filtered values
EDGE = 1e-6  # x is clipped to [EDGE, 1 - EDGE]: the Beta log-density is infinite at 0 and 1
MAX_CONCENTRATION = 1e7  # cap on alpha + beta when a component has (almost) no spread
MAX_ITER = 200
TOL = 1e-6
MAX_FIT_SAMPLES = 32768
ROUNDING = 1e-12  # filtered values (of the map scaled to max |R| = 1) up to this are 0


@dataclass(frozen=True)
class BetaComponent:
    alpha: float
    beta: float

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def log_pdf(self, log_x: Tensor, log_1mx: Tensor) -> Tensor:
        return (self.alpha - 1.0) * log_x + (self.beta - 1.0) * log_1mx - betaln(self.alpha, self.beta)

    def quantile(self, q: float) -> float:
        # scipy.stats.beta.ppf's own function (Boost's ibeta_inv; equal bit for bit) without its
        # argument handling, which cost more than the rest of an EM iteration
        return float(betaincinv(self.alpha, self.beta, q))


@dataclass(frozen=True)
class BetaMixture:
    """A fitted two-component mixture: background (low values) and defect (high values)."""

    background: BetaComponent
    defect: BetaComponent
    weight_defect: float  # mixing weight of the defect component (0.5 with class balancing)
    iterations: int
    converged: bool
    seed_rules: bool

    def defect_posterior(self, x: np.ndarray) -> np.ndarray:
        """The (modified) E-step: P(defect | x) for x in (0, 1)."""
        return host(self.posterior_on(torch.from_numpy(np.asarray(x, dtype=np.float64))))

    def posterior_on(self, x: Tensor) -> Tensor:
        """defect_posterior of a tensor, on its device."""
        x = x.to(torch.float64).clamp(EDGE, 1.0 - EDGE)
        return _responsibility(self, x, log_rows(x))

    def to_dict(self) -> dict[str, Any]:
        return {
            "background": {"alpha": self.background.alpha, "beta": self.background.beta},
            "defect": {"alpha": self.defect.alpha, "beta": self.defect.beta},
            "weight_defect": self.weight_defect,
        }


def moments_to_beta(mean: float, variance: float) -> BetaComponent:
    """Method of moments: the Beta with this mean and variance (variance clamped to a valid range)."""
    mean = min(max(mean, EDGE), 1.0 - EDGE)
    limit = mean * (1.0 - mean)
    variance = min(max(variance, limit / (MAX_CONCENTRATION + 1.0)), 0.999 * limit)
    concentration = limit / variance - 1.0
    return BetaComponent(alpha=mean * concentration, beta=(1.0 - mean) * concentration)


Betas = list[BetaComponent | None]


def _weighted_betas(x: Tensor, weights: Tensor) -> Betas:
    """One Beta per row of weights (R, N) by the weighted method of moments; None for a row without weight.

    The sums run on x's device as dot products; mean first, then the spread about it (two passes,
    as numpy's np.sum(w * (x - mean) ** 2) did); one host sync for all rows."""
    total = weights.sum(1)
    mean = torch.mv(weights, x) / total
    variance = torch.linalg.vecdot(weights, (x - mean[:, None]).square_()) / total
    rows = torch.stack([total, mean, variance], 1).tolist()
    return [moments_to_beta(m, v) if t > 0.0 else None for t, m, v in rows]


def log_rows(x: Tensor) -> Tensor:
    """(3, N): log x, log(1 - x) and ones, what every E-step needs of x."""
    return torch.stack([torch.log(x), torch.log1p(-x), torch.ones_like(x)])


def _log_ratio_coefficients(model: BetaMixture, device: torch.device) -> Tensor:
    """log(w pdf_defect(x) / ((1 - w) pdf_background(x))) = c . (log x, log(1 - x), 1): the Beta
    parameters' differences and the constant."""
    w, defect, background = model.weight_defect, model.defect, model.background
    offset = (
        math.log(w) - math.log1p(-w) - betaln(defect.alpha, defect.beta) + betaln(background.alpha, background.beta)
    )
    values = [defect.alpha - background.alpha, defect.beta - background.beta, offset]
    return torch.tensor(values, dtype=torch.float64, device=device)


def _responsibility(model: BetaMixture, x: Tensor, logs: Tensor) -> Tensor:
    """P(defect | x) under the model, with seed 001's rules when model.seed_rules (x in any order)."""
    r = torch.mv(logs.T, _log_ratio_coefficients(model, x.device)).sigmoid_()
    if model.seed_rules:
        # Seed 001: inside the background's lower 90 % interval -> 100 % background;
        # above the defect component's mean -> 100 % defect (this rule wins where both hold).
        r = torch.where(x <= model.background.quantile(BACKGROUND_QUANTILE), 0.0, r)
        r = torch.where(x > model.defect.mean, 1.0, r)
    return r


@dataclass(frozen=True)
class Ascending:
    """What the EM on values in ascending order reuses every iteration: the values on the host
    (the rules' bounds are searched there), the prefix sums of x and x² over x[:i] ((2, N + 1),
    host) and the moment rows (1, x, x²) on x's device."""

    host: np.ndarray
    ends: np.ndarray
    moments: Tensor

    @classmethod
    def of(cls, x: Tensor) -> Ascending:
        moments = torch.stack([torch.ones_like(x), x, x * x])
        ends = torch.zeros(2, x.numel() + 1, dtype=torch.float64, device=x.device)
        torch.cumsum(moments[1:], 1, out=ends[:, 1:])
        return cls(x.cpu().numpy(), ends.cpu().numpy(), moments)


def _step_ascending(model: BetaMixture, x: Tensor, logs: Tensor, ascending: Ascending) -> tuple[Betas, float]:
    """One EM step (E-step, then the weighted moments) on x in ascending order: ([defect, background], sum of
    the defect responsibilities).

    Seed 001's rules make the responsibility exactly 0 on x's low end and 1 on its high end; the
    posterior r is computed between them only. Everything else is sums: Σ r, Σ r x, Σ r x² over the
    middle in one product, the background's there as the middle's totals minus those, the ends' by
    prefix sums, and each spread as Σ x² / n - mean² (values in (0, 1); moments_to_beta floors the
    variance). Five small ops and one host sync per iteration, where the spread about each mean
    took thirteen and two: the EM is ~60 iterations of a few thousand values, so it was op-bound."""
    n = x.numel()
    start, stop = 0, n
    if model.seed_rules:
        bounds = [model.background.quantile(BACKGROUND_QUANTILE), model.defect.mean]
        start, stop = np.searchsorted(ascending.host, bounds, side="right").tolist()  # x[:start] <= quantile
    low_end, high = min(start, stop), max(start, stop)  # x[:low_end]: background only; the defect's rule wins
    r = torch.mv(logs[:, start:high].T, _log_ratio_coefficients(model, x.device)).sigmoid_()
    defect = torch.mv(ascending.moments[:, start:high], r).tolist()  # Σ r, Σ r x, Σ r x²
    (x_low, x_start, x_high, x_stop, x_all), (q_low, q_start, q_high, q_stop, q_all) = ascending.ends[
        :, [low_end, start, high, stop, n]
    ].tolist()
    middle = (high - start, x_high - x_start, q_high - q_start)
    sums = (
        (defect[0] + n - stop, defect[1] + x_all - x_stop, defect[2] + q_all - q_stop),
        (middle[0] - defect[0] + low_end, middle[1] - defect[1] + x_low, middle[2] - defect[2] + q_low),
    )
    betas: Betas = []
    for total, first, second in sums:
        mean = first / total if total > 0.0 else 0.0
        betas.append(moments_to_beta(mean, second / total - mean * mean) if total > 0.0 else None)
    return betas, sums[0][0]


def fit_beta_mixture(
    x: Tensor | np.ndarray,
    *,
    seed_rules: bool = True,
    balance: bool = True,
    max_iter: int = MAX_ITER,
    tol: float = TOL,
) -> BetaMixture:
    """EM for two Beta components on values in [0, 1] (a tensor: on its device).

    Initialised from the isodata split of x (no randomness). M-step: weighted
    method of moments. seed_rules: seed 001's E-step changes (see
    _responsibility). balance: seed 001's class weighting, each component's
    responsibilities divided by their sum, which makes the mixing weights equal
    (0.5/0.5) whatever the pixel counts; without it the weights are the usual
    mean responsibilities. Stops when no parameter changes by more than tol
    (relative) or after max_iter iterations.
    """
    x = x if isinstance(x, Tensor) else torch.from_numpy(np.asarray(x))
    x = x.reshape(-1).to(torch.float64).clamp(EDGE, 1.0 - EDGE)
    logs = log_rows(x)
    ascending = Ascending.of(x) if bool((x[1:] >= x[:-1]).all()) else None  # bmm's sample is ascending
    split, _, _ = isodata_threshold(x)
    high = (x > split).to(torch.float64)
    background, defect = _weighted_betas(x, torch.stack([1.0 - high, high]))
    if background is None or defect is None:
        raise ValueError("fit_beta_mixture needs at least two distinct values")
    model = BetaMixture(background, defect, 0.5 if balance else float(high.mean()), 0, False, seed_rules)
    for iteration in range(1, max_iter + 1):
        if ascending is not None:
            (new_defect, new_background), defect_total = _step_ascending(model, x, logs, ascending)
        else:
            r = _responsibility(model, x, logs)
            new_defect, new_background = _weighted_betas(x, torch.stack([r, 1.0 - r]))
            defect_total = float(r.sum())
        if new_defect is None or new_background is None:  # one component lost every pixel
            return BetaMixture(model.background, model.defect, model.weight_defect, iteration, False, seed_rules)
        if new_defect.mean < new_background.mean:
            new_defect, new_background = new_background, new_defect
        weight = 0.5 if balance else min(max(defect_total / x.numel(), EDGE), 1.0 - EDGE)
        new = BetaMixture(new_background, new_defect, weight, iteration, False, seed_rules)
        if _max_relative_change(model, new) <= tol:
            return BetaMixture(new_background, new_defect, weight, iteration, True, seed_rules)
        model = new
    return model


def _max_relative_change(old: BetaMixture, new: BetaMixture) -> float:
    pairs = (
        (old.background.alpha, new.background.alpha),
        (old.background.beta, new.background.beta),
        (old.defect.alpha, new.defect.alpha),
        (old.defect.beta, new.defect.beta),
        (old.weight_defect, new.weight_defect),
    )
    return max(abs(b - a) / max(abs(a), 1e-12) for a, b in pairs)


def bmm(
    relevance: Any,
    *,
    max_fit_samples: int | None = MAX_FIT_SAMPLES,
    filter_size: int = FILTER_SIZE,
    seed_rules: bool = True,
    balance: bool = True,
) -> MaskResult:
    """Seed 001's BMM extractor.

    5x5 mean filter; negatives (and rounding residue up to ROUNDING) -> 0; keep the values above the median (the lowest
    50 % are background, score 0); map the kept values affinely to [0, 1]; fit
    the two-Beta mixture (on at most max_fit_samples evenly spaced quantiles of
    the kept values, see quantile_sample; None fits all; nothing is random);
    score = P(defect | x) with the seed's E-step rules; mask = score > 0.5. A map
    without positive filtered relevance gives an empty mask; kept values that are
    all equal form the mask by themselves.
    """
    prepared = prepare(relevance)
    shape, scale = prepared.shape, prepared.scale
    lo_s, hi_s = prepared.scaled_range
    if hi_s == lo_s:
        return empty_result("bmm", shape, "constant map", with_score=True)
    # Areas of exact zeros (common in a U-Net's relevance) filter to +-1e-20-sized rounding residue
    # whose sign depends on the order of the sums: it is 0, or the kept half would depend on it.
    # (Monotone, so the shared sorted values stay sorted.)
    raw = prepared.filtered(filter_size)
    filtered = torch.where(raw <= ROUNDING, 0.0, raw)
    ordered = prepared.sorted_filtered(filter_size)
    ordered = torch.where(ordered <= ROUNDING, 0.0, ordered)
    if float(ordered[-1]) <= 0.0:
        return empty_result("bmm", shape, "no positive relevance", with_score=True)
    cut = linear_quantile(ordered, DROP_SHARE)
    kept_sorted = ordered[int(torch.searchsorted(ordered, cut, right=True)) :]  # the values > cut
    if kept_sorted.numel() == 0:  # the upper half ties with the median: nothing stands out
        return empty_result("bmm", shape, "no values above the median", with_score=True)
    keep = filtered > cut
    lo, hi = torch.stack([kept_sorted[0], kept_sorted[-1]]).tolist()
    params: dict[str, Any] = {"cut": cut * scale, "low": lo * scale, "high": hi * scale}
    if hi == lo:
        mask = host(keep)
        return MaskResult("bmm", mask, mask.astype(np.float64), params=params, note="kept values are constant")
    # fitted on the kept values in ascending order (their quantiles when there are more than max_fit_samples)
    model = fit_beta_mixture(
        quantile_sample((kept_sorted - lo) / (hi - lo), max_fit_samples), seed_rules=seed_rules, balance=balance
    )
    score = torch.zeros(shape, dtype=torch.float64, device=filtered.device)
    score[keep] = model.posterior_on((filtered[keep] - lo) / (hi - lo))
    params.update(model.to_dict())
    params["fit_samples"] = int(min(kept_sorted.numel(), max_fit_samples or kept_sorted.numel()))
    out = host(score)
    return MaskResult(
        method="bmm",
        mask=out > 0.5,
        score=out,
        iterations=model.iterations,
        converged=model.converged,
        params=params,
    )


def linear_quantile(ordered: Tensor, q: float) -> float:
    """numpy's default (linear) quantile of values sorted in ascending order (sort_values; torch.quantile
    refuses inputs over 2^24 values)."""
    position = q * (ordered.numel() - 1)
    below = math.floor(position)
    a, b = torch.stack([ordered[below], ordered[min(below + 1, ordered.numel() - 1)]]).tolist()
    t = position - below
    # numpy's _lerp: a + (b - a) t, computed from b's side for t >= 0.5
    return b - (b - a) * (1.0 - t) if t >= 0.5 else a + (b - a) * t
