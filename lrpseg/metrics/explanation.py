"""How an explanation distributes its relevance: conservation, mass inside the mask, pointing game, signs, channels.

Pixel-level metrics (relevance mass accuracy, pointing game) use the
channel-summed map R(h, w) = sum_c R(c, h, w); sign and channel metrics use the
elements of the (C, H, W) relevance. Every value is finite: a ratio with nothing
to divide (no positive relevance, an all-zero map) is 0.0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lrpseg.metrics.errors import InvalidScoreError, ShapeMismatchError
from lrpseg.metrics.validation import as_mask, as_scores, ratio


def as_channels(relevance: Any) -> np.ndarray:
    """Relevance as float64 (C, H, W); a 2-D map becomes one channel."""
    r = as_scores(relevance, "relevance")
    if r.ndim == 2:
        return r[None]
    if r.ndim != 3:
        raise ShapeMismatchError(f"relevance must be (C, H, W) or (H, W), got shape {r.shape}")
    return r


def explanation_metrics(relevance: Any, mask: Any, *, r_out_sum: float | None = None) -> dict[str, float | list[float]]:
    """Metrics of one explanation against the mask of what it explains (bool (H, W)).

    relevance_sum: sum of all relevance.
    conservation: relevance_sum / r_out_sum (only when r_out_sum is given and non-zero;
      LRP conserves when it is 1).
    relevance_mass_accuracy: positive pixel relevance inside the mask / all positive
      pixel relevance (Arras et al. 2022); 0.0 without positive relevance.
    pointing_game: 1.0 when the pixel with the largest relevance (the first in raster
      order on ties) lies inside the mask, else 0.0.
    negative_share: sum |R| over negative elements / sum |R|; 0.0 for an all-zero map.
    channel_shares: per input channel, sum R_c / sum R (signed shares summing to 1;
      all 0.0 when sum R is 0), as lrpseg.lrp reports them.
    """
    r = as_channels(relevance)
    m = as_mask(mask, "mask")
    if m.shape != r.shape[1:]:
        raise ShapeMismatchError(f"mask shape {m.shape} does not match relevance (H, W) {r.shape[1:]}")
    pixel = r.sum(axis=0)
    positive = np.clip(pixel, 0.0, None)
    total = float(r.sum())
    magnitude = float(np.abs(r).sum())
    per_channel = r.reshape(r.shape[0], -1).sum(axis=1)
    metrics: dict[str, float | list[float]] = {
        "relevance_sum": total,
        "relevance_mass_accuracy": ratio(float(positive[m].sum()), float(positive.sum()), 0.0),
        "pointing_game": float(m.flat[int(np.argmax(pixel))]),
        "negative_share": ratio(float(-r[r < 0].sum()), magnitude, 0.0),
        "channel_shares": [ratio(float(v), total, 0.0) for v in per_channel],
    }
    if r_out_sum is not None:
        if not np.isfinite(r_out_sum):
            raise InvalidScoreError(f"r_out_sum must be finite, got {r_out_sum}")
        if r_out_sum != 0:
            metrics["conservation"] = total / float(r_out_sum)
    return metrics
