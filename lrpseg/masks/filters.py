"""The 5x5 mean filter seed 001 applies before GMM and BMM, as tensor ops on the map's device."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

FILTER_SIZE = 5
# scipy's default: the map is mirrored about its edge (d c b a | a b c d), so border
# pixels are averaged with their own neighbourhood instead of with zeros.
FILTER_MODE = "reflect"

Map = TypeVar("Map", np.ndarray, Tensor)


def mirrored_index(n: int, left: int, right: int, device: torch.device) -> Tensor:
    """Indices of a length-n axis padded by mirroring about its edges (scipy "reflect", numpy
    "symmetric"); a pad longer than the axis keeps mirroring (period 2n)."""
    i = np.arange(-left, n + right) % (2 * n)
    return torch.from_numpy(np.where(i >= n, 2 * n - 1 - i, i)).to(device)


def box_mean(relevance: Tensor, size: int = FILTER_SIZE) -> Tensor:
    """size^d box mean of a float64 tensor, one axis after the other (what scipy.ndimage.uniform_filter
    computes, mode "reflect"; for an even size the window reaches size // 2 back, as scipy's does)."""
    out = relevance.to(torch.float64)
    if size <= 1:
        return out.clone()
    left = size // 2
    for axis in range(out.dim()):
        index = mirrored_index(out.shape[axis], left, size - 1 - left, out.device)
        out = out.index_select(axis, index).unfold(axis, size, 1).sum(-1) / size
    return out


def mean_filter(relevance: Map, size: int = FILTER_SIZE) -> Map:
    """box_mean of a map: a tensor stays on its device, a numpy array comes back as a float64 array."""
    if isinstance(relevance, Tensor):
        return box_mean(relevance, size)
    return box_mean(torch.from_numpy(np.asarray(relevance, dtype=np.float64)), size).numpy()
