"""MaskResult (what every extractor returns) and the input check they share."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lrpseg.masks.errors import InvalidRelevanceError


@dataclass(frozen=True)
class MaskResult:
    """A binary mask extracted from a relevance map, with what the extractor fitted.

    mask: bool (H, W). score: per-pixel probability of the relevant class (H, W),
    None where the method has none (Simple). threshold: the cut in relevance units
    (Simple), or None. params: JSON-safe fitted values (component parameters, cut
    values, ...). note: why the result is degenerate ("constant map", "no positive
    relevance", ...), None for a regular fit.
    """

    method: str
    mask: np.ndarray
    score: np.ndarray | None
    threshold: float | None = None
    iterations: int = 0
    converged: bool = True
    params: dict[str, Any] = field(default_factory=dict)
    note: str | None = None

    @property
    def share(self) -> float:
        """Fraction of pixels in the mask."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary without pixel data."""
        return {
            "method": self.method,
            "pixels": int(np.count_nonzero(self.mask)),
            "share": self.share,
            "threshold": self.threshold,
            "iterations": self.iterations,
            "converged": self.converged,
            "params": self.params,
            "note": self.note,
        }


def as_relevance_map(relevance: Any) -> Tensor:
    """Check a relevance map and return it as a float64 tensor (H, W), or (D, H, W) for a volume (the
    mixtures fit the flattened values; the mean filter becomes a 5x5x5 box).

    A torch tensor stays on its device (the worker's GPU: the extractors run there); anything
    else numpy can convert lands on the CPU. Raises InvalidRelevanceError for the wrong rank, an
    empty map, a non-real dtype or non-finite values.
    """
    if isinstance(relevance, Tensor):
        source: Tensor | np.ndarray = relevance.detach()
        real = relevance.is_floating_point() or not (relevance.is_complex() or relevance.dtype == torch.bool)
    else:
        source = np.asarray(relevance)
        real = np.issubdtype(source.dtype, np.floating) or np.issubdtype(source.dtype, np.integer)
    shape = tuple(source.shape)
    if len(shape) not in (2, 3):
        raise InvalidRelevanceError(
            f"relevance must be a 2-D (H, W) map or a (D, H, W) volume, got shape {shape}; "
            "sum a (C, H, W) map over channels first"
        )
    if math.prod(shape) == 0:
        raise InvalidRelevanceError(f"relevance map is empty (shape {shape})")
    if not real:
        raise InvalidRelevanceError(f"relevance must be real-valued, got dtype {source.dtype}")
    tensor = source if isinstance(source, Tensor) else torch.from_numpy(source.astype(np.float64))
    tensor = tensor.to(torch.float64)
    if not bool(torch.isfinite(tensor).all()):
        raise InvalidRelevanceError("relevance contains NaN or infinite values")
    return tensor


def scaled(relevance: Tensor) -> tuple[Tensor, float]:
    """relevance / max|relevance| (so huge or tiny maps cannot overflow), and that scale.

    The scale is 0.0 for an all-zero map, which is returned unchanged.
    """
    scale = float(relevance.abs().max())
    if scale == 0.0:
        return relevance, 0.0
    return relevance / scale, scale


def min_max(tensor: Tensor) -> tuple[float, float]:
    """(min, max) of a tensor in one pass and one host sync."""
    lo, hi = torch.stack(torch.aminmax(tensor)).tolist()
    return lo, hi


def host(tensor: Tensor) -> np.ndarray:
    """A result tensor as the numpy array MaskResult holds (one copy off the device)."""
    return tensor.detach().cpu().numpy()


def empty_result(method: str, shape: tuple[int, ...], note: str, *, with_score: bool, **params: Any) -> MaskResult:
    """The result for a map with nothing to segment: an empty mask and a zero score."""
    score = np.zeros(shape, dtype=np.float64) if with_score else None
    return MaskResult(method=method, mask=np.zeros(shape, dtype=bool), score=score, params=dict(params), note=note)
