"""Input checks shared by the metrics."""

from __future__ import annotations

from typing import Any

import numpy as np

from lrpseg.metrics.errors import InvalidMaskError, InvalidScoreError, ShapeMismatchError


def as_mask(array: Any, name: str) -> np.ndarray:
    """A bool array from a bool array or numbers that are all 0 or 1."""
    mask = np.asarray(array)
    if mask.size == 0:
        raise InvalidMaskError(f"{name} is empty")
    if mask.dtype == bool:
        return mask
    if not (np.issubdtype(mask.dtype, np.integer) or np.issubdtype(mask.dtype, np.floating)):
        raise InvalidMaskError(f"{name} must be boolean or 0/1 numbers, got dtype {mask.dtype}")
    if not np.isin(mask, (0, 1)).all():
        raise InvalidMaskError(f"{name} must hold only 0/1 (False/True) values")
    return mask.astype(bool)


def as_scores(array: Any, name: str) -> np.ndarray:
    """A finite float64 array."""
    scores = np.asarray(array)
    if scores.size == 0:
        raise InvalidScoreError(f"{name} is empty")
    if not (np.issubdtype(scores.dtype, np.number) or scores.dtype == bool) or np.iscomplexobj(scores):
        raise InvalidScoreError(f"{name} must be real-valued, got dtype {scores.dtype}")
    scores = scores.astype(np.float64, copy=False)
    if not np.isfinite(scores).all():
        raise InvalidScoreError(f"{name} contains NaN or infinite values")
    return scores


def same_shape(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape != b.shape:
        raise ShapeMismatchError(f"{names} differ in shape: {a.shape} vs {b.shape}")


def ratio(numerator: float, denominator: float, undefined: float) -> float:
    """numerator / denominator, or `undefined` when the denominator is zero."""
    return float(numerator / denominator) if denominator else float(undefined)
