"""Component: a mask extractor that thresholds each relevant region against its own peak.

Seed 001's extractors cut the whole map at one value. On a U-Net's whole-output
explanation the relevance of one defect can be ten times that of another in the same
image, and about 40 % of the positive relevance lies in a 1-3 px fringe around each
defect: one global cut keeps the strong defect's fringe and loses the weak defect.
Here the positive relevance is first smoothed by a mean filter whose size grows with the
image (regions = connected areas above `low` x the smoothed maximum), then, inside
each region, a pixel is kept when its own positive relevance exceeds `keep` x the
region's peak. The score (for PR curves) is the pixel's positive relevance divided by
its region's peak, so the mask is exactly score > keep. Per-region diagnostics
(pixels, kept pixels, peak, share of the positive relevance) come back in params.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from lrpseg.masks.filters import mean_filter
from lrpseg.masks.prepared import prepare
from lrpseg.masks.result import MaskResult, empty_result, host

LOW = 0.05  # region support: smoothed positive relevance above 5 % of its maximum
KEEP = 0.2  # inside a region: pixels above 20 % of the region's peak
REFERENCE_SIDE = 128  # the filter is 3 x 3 up to about this side, then grows with the image
MAX_REPORTED = 20  # regions listed in params (largest positive relevance first)


def scaled_filter_size(shape: tuple[int, ...]) -> int:
    """Odd mean-filter side for an image: 3 at 128 px, 5 at 256, 9 at 512 (2 * round(side / 128) + 1)."""
    side = min(shape[-2:])
    return max(3, 2 * round(side / REFERENCE_SIDE) + 1)


def component(relevance: Any, *, low: float = LOW, keep: float = KEEP, filter_size: int | None = None) -> MaskResult:
    """Regions of the smoothed positive relevance, each cut at `keep` x its own peak (module docstring).

    filter_size None: scaled_filter_size of the map. A map without positive relevance
    gives an empty mask and a zero score.
    """
    if not (0.0 < low < 1.0 and 0.0 <= keep < 1.0):
        raise ValueError(f"need 0 < low < 1 and 0 <= keep < 1, got low={low}, keep={keep}")
    prepared = prepare(relevance)
    shape, scale = prepared.shape, prepared.scale
    if prepared.scaled_range[1] <= 0.0:
        return empty_result("component", shape, "no positive relevance", with_score=True)
    positive = host(prepared.scaled.clamp_min(0.0))  # connected regions need scipy.ndimage: on the CPU
    size = scaled_filter_size(shape) if filter_size is None else filter_size
    smooth = mean_filter(positive, size)
    labels, count = ndimage.label(smooth > low * smooth.max())
    index = np.arange(1, count + 1)
    # each region's peak (ndimage.maximum's values; it sorts the whole map to find them)
    region_max = np.zeros(count + 1)
    np.maximum.at(region_max, labels.ravel(), positive.ravel())
    region_max[0] = 0.0  # outside every region
    peaks = region_max[1:]
    region_peak = region_max[labels]
    score = np.divide(positive, region_peak, out=np.zeros_like(positive), where=region_peak > 0)
    mask = score > keep
    return MaskResult(
        method="component",
        mask=mask,
        score=score,
        threshold=None,
        params={
            "filter_size": size,
            "low": low,
            "keep": keep,
            "regions": int(count),
            "region_list": region_diagnostics(positive, labels, mask, index, peaks, scale),
        },
    )


def region_diagnostics(positive: np.ndarray, labels: np.ndarray, mask: np.ndarray, index: np.ndarray,
                       peaks: np.ndarray, scale: float) -> list[dict[str, Any]]:  # fmt: skip
    """Per region (largest positive relevance first, at most MAX_REPORTED): size, kept pixels,
    peak in relevance units, share of all positive relevance, centroid (row, column)."""
    if index.size == 0:
        return []
    total = float(positive.sum())
    # the labelled pixels only (regions are usually a few % of the map); bincount adds each
    # region's values in the same order either way, so the sums are the same to the bit
    inside = np.flatnonzero(labels)
    region = labels.ravel()[inside]

    def per_region(weights: np.ndarray) -> np.ndarray:  # ndimage.sum_labels' bincount, once per quantity
        return np.bincount(region, weights=weights, minlength=index.size + 1)[1:]

    pixels = np.bincount(region, minlength=index.size + 1)[1:].astype(np.float64)
    kept = per_region(mask.ravel()[inside].astype(np.float64))
    mass = per_region(positive.ravel()[inside])
    # ndimage.center_of_mass of ones: the mean row (column, ...) index of each region's pixels
    axes = np.unravel_index(inside, labels.shape)
    centres = np.stack([per_region(axis.astype(np.float64)) for axis in axes], 1) / pixels[:, None]
    order = np.argsort(-mass, kind="stable")[:MAX_REPORTED]
    return [
        {
            "pixels": int(pixels[i]),
            "kept_pixels": int(kept[i]),
            "peak": float(peaks[i] * scale),
            "positive_share": float(mass[i] / total),
            "centroid": [round(float(c), 2) for c in centres[i]],
        }
        for i in order
    ]
