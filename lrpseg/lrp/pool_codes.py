"""Max-pool indices kept as one int8 per output: the argmax's offset inside its own window.

A max-pool of non-overlapping windows (kernel = stride, no padding) picks one position per
window; torch returns it as an int64 flat index into the input plane (8 bytes per pooled
value: 16 B/px at a U-Net's first pool of 8 channels). Its offset inside the window fits in
an int8 for windows of up to 127 positions, and the flat index is rebuilt from it exactly
when the sweep unpools.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# pooled values from which indices are compacted: below, the int64 arithmetic of compact and
# expand costs more time (~10 % of a 256² sweep) than the few MiB it saves are worth
COMPACT_FROM = 1 << 20


def fits(kernel: tuple[int, ...]) -> bool:
    """Whether a window's offsets fit in an int8."""
    return math.prod(kernel) <= torch.iinfo(torch.int8).max


def worth(indices: Tensor, kernel: tuple[int, ...]) -> bool:
    """Whether to keep these indices compacted: they fit, and there are enough of them."""
    return fits(kernel) and indices.numel() >= COMPACT_FROM


def compact(indices: Tensor, plane: tuple[int, ...], kernel: tuple[int, ...]) -> Tensor:
    """Each flat index (into an input plane of spatial shape `plane`) as its offset in its window."""
    code = torch.zeros(indices.shape, dtype=torch.int8, device=indices.device)
    rest = indices
    scale = 1
    for size, k in zip(reversed(plane), reversed(kernel)):
        code += ((rest % size) % k * scale).to(torch.int8)
        rest = rest // size
        scale *= k
    return code


def expand(code: Tensor, plane: tuple[int, ...], kernel: tuple[int, ...]) -> Tensor:
    """The int64 flat indices `compact` was given back (for max_unpool)."""
    flat = torch.zeros(code.shape, dtype=torch.int64, device=code.device)
    rest = code.to(torch.int64)
    offsets = []
    for k in reversed(kernel):
        offsets.append(rest % k)
        rest = rest // k
    stride = 1
    for d, (size, k, offset) in enumerate(zip(reversed(plane), reversed(kernel), offsets)):
        axis = code.dim() - 1 - d
        view = [1] * code.dim()
        view[axis] = code.shape[axis]
        origin = torch.arange(code.shape[axis], device=code.device).view(view) * k
        flat += (origin + offset) * stride
        stride *= size
    return flat
