"""Volumes as pictures: evenly spaced axial slices tiled into one 2-D mosaic.

Every 2-D renderer (heatmap, overlay, mask, segmentation) then draws the mosaic in one go,
so all tiles share one colour scale and one threshold.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["GAP", "MAX_TILES", "grid_shape", "montage_slices", "tile"]

MAX_TILES = 9  # a 3x3 grid
GAP = 2  # pixels between tiles


def montage_slices(depth: int, count: int = MAX_TILES) -> list[int]:
    """Up to `count` evenly spaced slice indices of a volume of `depth` slices, first and last included;
    a single slice is the middle one."""
    if depth < 1 or count < 1:
        raise ValueError(f"need depth >= 1 and count >= 1, got {depth} and {count}")
    if count == 1 or depth == 1:
        return [depth // 2]
    picked = np.linspace(0, depth - 1, min(count, depth)).round().astype(int)
    return sorted({int(i) for i in picked})


def grid_shape(count: int) -> tuple[int, int]:
    """(rows, columns) of a near-square grid for `count` tiles, columns >= rows."""
    cols = math.ceil(math.sqrt(count))
    return math.ceil(count / cols), cols


def tile(volume: np.ndarray, slices: list[int], fill: float | int = 0, gap: int = GAP) -> np.ndarray:
    """(..., D, H, W) -> (..., rows*H + gaps, cols*W + gaps): the chosen slices row by row."""
    rows, cols = grid_shape(len(slices))
    *lead, _, h, w = volume.shape
    out = np.full((*lead, rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap), fill, dtype=volume.dtype)
    for n, index in enumerate(slices):
        r, c = divmod(n, cols)
        y, x = r * (h + gap), c * (w + gap)
        out[..., y : y + h, x : x + w] = volume[..., index, :, :]
    return out
