"""Seed 000's threshold + logarithmic transfer function for heavy-tailed relevance maps.

LRP relevance is heavy-tailed (99th percentile of |R| 12-330x the median): a
linear colour scale shows a few bright pixels and nothing else. Seed 000 zeroes
|R| below a threshold tau and compresses the rest logarithmically:

    f(R) = sign(R) * log(1 + |R| / tau) / log(1 + max|R| / tau)   for |R| >= tau
    f(R) = 0                                                       for |R| <  tau

f maps into [-1, 1], is odd (f(-R) = -f(R), tau depends on |R| only) and
monotone non-decreasing (it jumps from 0 to log 2 / log(1 + max|R| / tau) at tau).

Default tau: cumulative relevance mass (DEFAULT_MASS). tau is the smallest |R| among
the fewest pixels that together hold 90 % of sum |R|: only the pixels that carry the
explanation are coloured. Seed 000's "median of the non-zero |R|" colours half the
non-zero pixels whatever the map looks like; on the shipped U-Net 97 % of |R| lies
within 4 px of the defect, so that rule painted a wide halo (docs/masks-metrics-render.md
gives the coloured shares of both rules). 90 % rather than 95 %: the last 5 % of the
mass is spread thinly over several times as many pixels as the first 90 %.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from lrpseg.render.errors import RenderInputError

Mode = Literal["log", "linear"]
DEFAULT_MASS = 0.9  # the default: the pixels holding 90 % of sum |R| are coloured
DEFAULT_PERCENTILE = 50.0  # seed 000's rule (the default before DEFAULT_MASS)


def as_finite(relevance: Any, name: str = "relevance") -> Tensor:
    """A float64 tensor of the map: a tensor stays on its device (the worker's GPU), anything else
    numpy converts lands on the CPU."""
    if isinstance(relevance, Tensor):
        if relevance.numel() == 0:
            raise RenderInputError(f"{name} is empty")
        if relevance.is_complex() or relevance.dtype == torch.bool:
            raise RenderInputError(f"{name} must be real-valued, got dtype {relevance.dtype}")
        tensor = relevance.detach().to(torch.float64)
    else:
        array = np.asarray(relevance)
        if array.size == 0:
            raise RenderInputError(f"{name} is empty")
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise RenderInputError(f"{name} must be real-valued, got dtype {array.dtype}")
        tensor = torch.from_numpy(array.astype(np.float64, copy=False))
    if not bool(torch.isfinite(tensor).all()):
        raise RenderInputError(f"{name} contains NaN or infinite values")
    return tensor


def descending(values: Tensor) -> Tensor:
    """Flattened values, largest first (numpy's sort on the CPU, torch's on a device)."""
    if values.device.type == "cpu":
        return torch.from_numpy(np.sort(values.reshape(-1).numpy())[::-1].copy())
    return torch.sort(values.reshape(-1), descending=True).values


def mass_tau(magnitude: np.ndarray | Tensor, mass: float) -> float:
    """The smallest |R| of the fewest pixels that hold `mass` (0-1) of sum |R|.

    |R| divided by max |R| (no overflow at any scale), sorted in descending order and
    summed one value after the other (a cumulative sum; sequential on the CPU, as numpy's); tau is the first value at which the running sum reaches
    mass x the full sum. render.js adds in the same order, so both get the same tau to
    the last bit (on a GPU the scan may add in another order: tau can move by rounding).
    Ties at tau are all kept (|R| >= tau), so the coloured pixels hold at
    least `mass`. mass 0 keeps the largest value only; mass 1 every non-zero value.
    """
    if not 0.0 <= mass <= 1.0:
        raise RenderInputError(f"mass must be within [0, 1], got {mass}")
    m = magnitude if isinstance(magnitude, Tensor) else torch.from_numpy(np.asarray(magnitude, dtype=np.float64))
    ordered = descending(m[m > 0])
    if ordered.numel() == 0:
        return 0.0
    running = torch.cumsum(ordered / ordered[0], 0)
    index = int(torch.searchsorted(running, mass * running[-1:], right=False).item())
    return float(ordered[min(index, ordered.numel() - 1)])


def coloured_share(relevance: Any, tau: float) -> float:
    """The fraction of pixels that the log transfer colours (|R| >= tau and |R| > 0)."""
    magnitude = as_finite(relevance).abs()
    return float(((magnitude >= tau) & (magnitude > 0)).to(torch.float64).mean())


def resolve_tau(
    relevance: Any,
    *,
    tau: float | None = None,
    percentile: float | None = None,
    fraction: float | None = None,
    mass: float | None = None,
) -> float:
    """The threshold tau in relevance units; give at most one of tau, percentile, fraction, mass.

    mass (0-1): the smallest |R| of the fewest pixels holding that share of sum |R|
    (mass_tau; the default, DEFAULT_MASS). percentile (0-100): that percentile of
    the non-zero |R| (seed 000's rule). fraction (0-1): that fraction of max |R|.
    A resolved tau of 0 (fraction 0) means "no threshold" and becomes the smallest
    non-zero |R|. An all-zero map has tau 0.
    """
    options = (("tau", tau), ("percentile", percentile), ("fraction", fraction), ("mass", mass))
    given = [name for name, v in options if v is not None]
    if len(given) > 1:
        raise RenderInputError(f"give one of tau, percentile, fraction or mass, not {' and '.join(given)}")
    magnitude = as_finite(relevance).abs()
    nonzero = magnitude[magnitude > 0]
    if nonzero.numel() == 0:
        return 0.0
    if tau is not None:
        return given_tau(tau)
    if fraction is not None:
        if not 0.0 <= fraction <= 1.0:
            raise RenderInputError(f"fraction must be within [0, 1], got {fraction}")
        value = fraction * float(nonzero.max())
    elif percentile is not None:
        if not 0.0 <= percentile <= 100.0:
            raise RenderInputError(f"percentile must be within [0, 100], got {percentile}")
        value = float(np.percentile(nonzero.cpu().numpy(), percentile))  # not the default: on the host
    else:
        value = mass_tau(nonzero, DEFAULT_MASS if mass is None else mass)
    return value if value > 0 else float(nonzero.min())


def given_tau(tau: float) -> float:
    """A threshold given in relevance units, checked."""
    if not (np.isfinite(tau) and tau > 0):
        raise RenderInputError(f"tau must be a positive finite number, got {tau}")
    return float(tau)


def log1p_ratio(magnitude: Tensor, tau: float) -> Tensor:
    """log(1 + magnitude / tau) without overflow for tiny tau (via logaddexp)."""
    return torch.logaddexp(torch.zeros_like(magnitude), torch.log(magnitude) - math.log(tau))


def log_transfer(
    relevance: Any,
    *,
    tau: float | None = None,
    percentile: float | None = None,
    fraction: float | None = None,
    mass: float | None = None,
    mode: Mode = "log",
) -> Any:
    """Relevance mapped into [-1, 1] (float64, same shape) for display; a tensor stays a tensor on
    its device, anything else comes back as a numpy array.

    Normalised per image: max |R| maps to +-1 whatever the map's unit.
    mode "log": seed 000's threshold + logarithmic transfer (module docstring)
    with tau from resolve_tau (default: the pixels holding 90 % of sum |R|).
    mode "linear": R / max|R|, no threshold (tau, percentile, fraction, mass ignored).
    An all-zero map gives zeros.
    """
    r = as_finite(relevance)
    out = transfer_tensor(r, tau=tau, percentile=percentile, fraction=fraction, mass=mass, mode=mode)
    return out if isinstance(relevance, Tensor) else out.cpu().numpy()


def transfer_tensor(r: Tensor, *, mode: Mode = "log", **threshold: float | None) -> Tensor:
    """log_transfer of a checked float64 tensor, on its device."""
    magnitude = r.abs()
    peak = float(magnitude.max())
    if peak == 0.0:
        return torch.zeros_like(r)
    if mode == "linear":
        return r / peak
    if mode != "log":
        raise RenderInputError(f"mode must be 'log' or 'linear', got {mode!r}")
    tau = threshold.get("tau")
    if tau is not None and sum(v is not None for v in threshold.values()) == 1:
        t = given_tau(tau)  # what resolve_tau returns for a map with |R| > 0, without its pass over the map
    else:
        t = resolve_tau(r, **threshold)
    scaled = log1p_ratio(magnitude, t) / log1p_ratio(magnitude.new_tensor(peak), t)
    return torch.where(magnitude >= t, torch.sign(r) * scaled, 0.0).clamp(-1.0, 1.0)


def inverse_transfer(value: np.ndarray | float, *, peak: float, tau: float, mode: Mode = "log") -> np.ndarray:
    """The relevance whose transfer value is `value` (for colour-bar labels).

    Log mode: |value| below the jump at tau maps to tau's edge, the zeroed band.
    """
    v = np.asarray(value, dtype=np.float64)
    if mode == "linear":
        return v * peak
    magnitude = tau * np.expm1(np.abs(v) * float(log1p_ratio(torch.tensor(float(peak), dtype=torch.float64), tau)))
    return np.sign(v) * np.minimum(magnitude, peak)
