"""z^B around each pixel's local background: the first-layer rule of `conserving-reference`.

z^B with the box [low, high] = [min(x, m), max(x, m)] per pixel, m = the median of the
pixel's `window` x `window` neighbourhood (edges replicated, per sample and channel).
Each term of z^B's denominator, (x - low) w+ + (x - high) w-, is then z+ applied to
x - m: a pixel at its local background level gets nothing, a pixel darker or brighter
than its surroundings gets relevance in proportion to how far it deviates. With a
global box (seed 001's z^B) or a zero reference (z+ on x) the grey background around a
thin defect takes relevance too, wherever the image is not at the normalisation mean.
Biases cancel as in z^B (b - b+ - b- = 0), so nothing is absorbed. It is zennit's
`ZBox` with these two tensors as bounds (tests/lrpseg/lrp/test_reference_box.py).
Inputs with fewer than two spatial dimensions (Linear, Conv1d) use the median over
their last dimension as m; 3-D inputs use the window on each slice of the last two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lrpseg.lrp.layers import Layer, clamp_neg, clamp_pos
from lrpseg.lrp.rules import Rule, Step, stabilize

WINDOW = 15  # px; chosen on training images (docs/lrp.md), 15-31 localise alike
_CHUNK = 1 << 22  # values per unfolded strip: bounds the memory of the median


def local_median(x: Tensor, window: int = WINDOW) -> Tensor:
    """Median of each value's window x window neighbourhood over the last two dimensions
    (edges replicated: scipy.ndimage.median_filter's mode='nearest'); for 2-D / 3-D tensors
    (Linear, Conv1d inputs) the median over the last dimension, broadcast back."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number, got {window}")
    if x.dim() < 4:
        return x.median(dim=-1, keepdim=True).values.expand_as(x)
    h, w = x.shape[-2:]
    planes = x.reshape(-1, 1, h, w)
    half = window // 2
    padded = F.pad(planes, (half, half, half, half), mode="replicate")
    rows = max(1, _CHUNK // (planes.shape[0] * window * window * w))
    out = torch.empty_like(planes)
    for top in range(0, h, rows):
        bottom = min(h, top + rows)
        strip = F.unfold(padded[:, :, top : bottom + 2 * half], window)  # (planes, window², rows·w)
        out[:, :, top:bottom] = strip.median(dim=1).values.view(-1, 1, bottom - top, w)
    return out.view_as(x)


class ReferenceBox(Rule):
    """z^B with per-pixel bounds spanning the pixel and its local median (module docstring)."""

    name = "reference-box"
    uses_output = False  # reads only the layer's input

    def __init__(self, window: int = WINDOW, stabilizer: float = 1e-6) -> None:
        if window < 1 or window % 2 == 0:
            raise ValueError(f"window must be a positive odd number, got {window}")
        self.window = window
        self.stabilizer = stabilizer

    def bounds(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The per-pixel box (low, high) for input x."""
        reference = local_median(x, self.window)
        return torch.minimum(x, reference), torch.maximum(x, reference)

    def step(self, layer: Layer, x: Tensor, z: Tensor | None, r: Tensor, *, nonneg: bool = False) -> Step:
        # z^B written as z+ on x - m: (x - low) w+ + (x - high) w- term by term, so that a unit whose
        # inputs all sit at their reference has exactly zero denominator and numerators (z^B's
        # x w - low w+ - high w- would leave float rounding there, which the stabiliser amplifies)
        low, high = self.bounds(x)
        above, below = x - low, x - high  # >= 0 and <= 0
        wp, _ = layer.params("pos", clamp_pos)
        wn, _ = layer.params("neg", clamp_neg)
        s = r / stabilize(layer.forward(above, wp) + layer.forward(below, wn), self.stabilizer)
        rel = above * layer.transpose(s, wp, x) + below * layer.transpose(s, wn, x)
        return Step(rel, s.new_zeros(s.shape[0]))  # b - b+ - b- = 0: biases cancel, as in z^B
