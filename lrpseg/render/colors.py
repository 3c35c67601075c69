"""Colours: the diverging relevance colormap (0 -> white) and the class palette."""

from __future__ import annotations

from functools import lru_cache

import matplotlib
import numpy as np
import torch
from torch import Tensor

from lrpseg.render.errors import RenderInputError

DEFAULT_CMAP = "bwr"
LUT_SIZE = 511  # odd, so that transfer value 0 lands exactly on the colormap's centre (white for bwr)

# Class 0 (background) is black; then matplotlib's tab10 colours, then golden-angle hues.
_TAB10 = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]


@lru_cache(maxsize=16)
def diverging_lut(cmap: str = DEFAULT_CMAP) -> np.ndarray:
    """(LUT_SIZE, 3) uint8 colours of a matplotlib colormap sampled on [0, 1]."""
    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError:
        raise RenderInputError(f"unknown colormap {cmap!r}; use a matplotlib name such as 'bwr' or 'seismic'") from None
    # resampled() re-evaluates the colormap at i / (LUT_SIZE - 1), so entry 255 is the exact
    # centre (calling the 256-entry default at 0.5 would return the entry for 128/255).
    rgba = colormap.resampled(LUT_SIZE)(np.arange(LUT_SIZE))
    lut = np.round(rgba[:, :3] * 255).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def colorize(values: np.ndarray, cmap: str = DEFAULT_CMAP) -> np.ndarray:
    """Transfer values in [-1, 1] -> uint8 RGB (..., 3); 0 -> the colormap's centre."""
    return colorize_tensor(torch.from_numpy(np.asarray(values, dtype=np.float64)), cmap).numpy()


def colorize_tensor(values: Tensor, cmap: str = DEFAULT_CMAP) -> Tensor:
    """colorize on the values' device: a table look-up, uint8 (..., 3) (round half to even, as np.rint)."""
    index = torch.round((values.clamp(-1.0, 1.0) + 1.0) * ((LUT_SIZE - 1) / 2)).long()
    return lut_tensor(cmap, str(values.device))[index]


@lru_cache(maxsize=16)
def lut_tensor(cmap: str, device: str) -> Tensor:
    """diverging_lut as a uint8 tensor on a device (copied there once)."""
    return torch.tensor(diverging_lut(cmap), device=device)


def class_palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8: black for class 0, distinct colours for the rest."""
    if num_classes < 1:
        raise RenderInputError(f"num_classes must be at least 1, got {num_classes}")
    colours = [(0, 0, 0), *_TAB10[: num_classes - 1]]
    golden = 0.618033988749895
    for i in range(len(colours), num_classes):
        hue = (i * golden) % 1.0
        rgb = matplotlib.colors.hsv_to_rgb((hue, 0.75, 0.95))
        colours.append(tuple(round(float(c) * 255) for c in rgb))
    return np.array(colours, dtype=np.uint8)
