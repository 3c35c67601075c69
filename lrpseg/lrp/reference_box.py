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

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lrpseg.lrp.layers import Layer, clamp_neg, clamp_pos
from lrpseg.lrp.rules import Rule, Step, stabilize

WINDOW = 15  # px; chosen on training images (docs/lrp.md), 15-31 localise alike
_CHUNK = 1 << 22  # values per unfolded strip: bounds the memory of the median
_COUNTERS = 1 << 24  # histogram counters per block of rows (int16: 32 MiB)
_PASS_COUNTERS = 1 << 20  # counters up to which whole planes share a pass (int16: 2 MiB)
MAX_LEVELS = 1 << 16  # distinct values up to which the CPU runs the sliding histogram
COUNTED_LEVELS = 256  # distinct values up to which CUDA counts window values below each level
_COUNT_CHUNK = 1 << 25  # window counts per block of levels and planes (float32: 128 MiB)


def local_median(x: Tensor, window: int = WINDOW) -> Tensor:
    """Median of each value's window x window neighbourhood over the last two dimensions
    (edges replicated: scipy.ndimage.median_filter's mode='nearest'); for 2-D / 3-D tensors
    (Linear, Conv1d inputs) the median over the last dimension, broadcast back.

    On the CPU, inputs with at most MAX_LEVELS distinct values (8- to 16-bit images, whatever
    their normalisation) take a sliding histogram over their ranks, about ten times faster
    than sorting every window; inputs with more take it block by block (reranked_median). On
    CUDA, inputs with at most COUNTED_LEVELS values count each window's values below every level
    (box sums, all in parallel): the median of the unfolded windows made the default composite's
    sweep 10x slower than `ours` at 512², batch 32, on an H200. Other inputs select from the
    unfolded windows. All pick the same element."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number, got {window}")
    if x.dim() < 4:
        return x.median(dim=-1, keepdim=True).values.expand_as(x)
    h, w = x.shape[-2:]
    planes = x.reshape(-1, h, w)
    levels, ranks = distinct_ranks(planes)
    if x.device.type == "cpu" and levels.numel() <= MAX_LEVELS:
        return levels[sliding_median_ranks(ranks, levels.numel(), window)].view_as(x)
    if x.device.type == "cpu" and block_rows(w, window) > 0:
        return reranked_median(planes, window).view_as(x)
    if x.device.type != "cpu" and levels.numel() <= COUNTED_LEVELS:
        return levels[counted_median_ranks(ranks, levels.numel(), window)].view_as(x)
    return unfolded_median(planes, window).view_as(x)


def distinct_ranks(planes: Tensor) -> tuple[Tensor, Tensor]:
    """(the distinct values in ascending order, each value's rank among them): torch.unique with
    return_inverse, by numpy's on the CPU, whose vectorised sort made it 5x faster here (256²:
    2.9 -> 0.56 ms)."""
    if planes.device.type != "cpu":
        return torch.unique(planes, return_inverse=True)
    levels, ranks = np.unique(planes.detach().numpy(), return_inverse=True)
    return torch.from_numpy(levels), torch.from_numpy(ranks.astype(np.int64, copy=False).reshape(planes.shape))


def block_rows(width: int, window: int) -> int:
    """Output rows per block of reranked_median: its inputs (with the window's halo) then hold at
    most MAX_LEVELS values, whatever they are; 0 where even one row's would hold more."""
    half = window // 2
    return max(0, MAX_LEVELS // (width + 2 * half) - 2 * half)


def reranked_median(planes: Tensor, window: int) -> Tensor:
    """local_median of (P, H, W) CPU planes with more than MAX_LEVELS distinct values (floats: an
    .npy upload, a resized image): blocks of rows, each with its halo ranked among its own values
    (at most MAX_LEVELS) and run through the sliding histogram. The halo rows are the block's
    real neighbours (replicated at the image's edges), so every window sees what it sees in the
    whole plane: the same element. 512² float32: 831 ms with the unfolded windows, 180-220 ms.
    Planes run one by one: ranked together, several planes hold more values, and the histogram's
    cost grows with them (a 64³ float volume: 110 ms one by one, 224 ms in blocks of 13)."""
    p, h, w = planes.shape
    half = window // 2
    rows = min(h, block_rows(w, window))
    values = planes.detach().numpy()
    out = torch.empty(p, h, w, dtype=planes.dtype)
    for plane in range(p):
        for top in range(0, h, rows):
            n = min(rows, h - top)
            strip = values[plane, np.clip(np.arange(top - half, top + n + half), 0, h - 1)]
            levels, ranks = distinct_ranks(torch.from_numpy(strip)[None])
            out[plane, top : top + n] = levels[sliding_median_ranks(ranks, levels.numel(), window)[0, half : half + n]]
    return out


def counted_median_ranks(ranks: Tensor, levels: int, window: int) -> Tensor:
    """The median rank of each window x window neighbourhood of (P, H, W) ranks in [0, levels),
    edges replicated, by counting: the median is the number of levels v below which fewer than
    half the window lies (count of ranks <= v, a separable box sum of an indicator). Work grows
    with levels x pixels, so it serves few levels; every step is one batched tensor op."""
    p, h, w = ranks.shape
    half = window // 2
    kth = (window * window + 1) // 2
    padded = F.pad(ranks[:, None].to(torch.float32), (half, half, half, half), mode="replicate")
    out = torch.zeros(p, h, w, dtype=torch.int64, device=ranks.device)
    per_level = padded[0].numel()
    planes_at_once = max(1, min(p, _COUNT_CHUNK // per_level))
    levels_at_once = max(1, _COUNT_CHUNK // (per_level * planes_at_once))
    for first in range(0, p, planes_at_once):
        block = padded[first : first + planes_at_once]
        for low in range(0, levels - 1, levels_at_once):  # the top level always holds the whole window
            v = torch.arange(low, min(levels - 1, low + levels_at_once), device=ranks.device, dtype=torch.float32)
            below = (block <= v[:, None, None]).to(torch.float32)  # (planes, levels, H + 2·half, W + 2·half)
            counts = F.avg_pool2d(below, (window, 1), stride=1, divisor_override=1)
            counts = F.avg_pool2d(counts, (1, window), stride=1, divisor_override=1)
            out[first : first + planes_at_once] += (counts < kth).sum(1)
    return out


def unfolded_median(planes: Tensor, window: int) -> Tensor:
    """local_median of (P, H, W) planes by selecting from each unfolded window, in strips of rows."""
    p, h, w = planes.shape
    half = window // 2
    padded = F.pad(planes[:, None], (half, half, half, half), mode="replicate")
    rows = max(1, _CHUNK // (p * window * window * w))
    out = torch.empty_like(planes)
    for top in range(0, h, rows):
        bottom = min(h, top + rows)
        strip = F.unfold(padded[:, :, top : bottom + 2 * half], window)  # (P, window², rows·W)
        out[:, top:bottom] = strip.median(dim=1).values.view(p, bottom - top, w)
    return out


def sliding_median_ranks(ranks: Tensor, levels: int, window: int) -> Tensor:
    """The median rank of each window x window neighbourhood of (P, H, W) int64 ranks in [0, levels),
    edges replicated: Huang's sliding histogram, run for all rows of a plane at once.

    Each row's window histogram moves one column per step (the leaving column's values out, the
    entering column's in); the median is found in a two-level histogram (coarse bins of `fine`
    ranks, then the ranks of the one coarse bin that holds it), so a step touches about
    2·sqrt(levels) counters per row. A step costs about ten small torch calls, so the width is
    cut into segments that slide side by side (each after its own window of warm-up columns):
    256 steps of 256 rows became 46 steps of 2048 at 256² in 8 bits (22 -> 14 ms; 512²: 67 -> 34).
    Rows and segments run in blocks of at most _COUNTERS counters; several whole planes (a volume's
    slices, a batch's images) slide side by side while their histograms stay cache-sized
    (_PASS_COUNTERS; a 64³ 8-bit volume: 78 -> 29 ms, where each slice took its own ~80 steps)."""
    p, h, w = ranks.shape
    half = window // 2
    fine = 1 << ((levels - 1).bit_length() + 1) // 2
    coarse = -(-levels // fine)
    per_row = coarse * fine
    segments = max(1, min(w // (2 * window), _COUNTERS // (per_row * h)))
    length = -(-w // segments)  # output columns per segment; the last one's surplus is cut off
    block = max(1, _COUNTERS // (per_row * segments))
    # planes per pass: as many as keep the histograms cache-sized (1 where a plane needs blocks of rows)
    group = max(1, min(p, _PASS_COUNTERS // (per_row * segments * h)))
    rows_at = torch.arange(-half, h + half).clamp_(0, h - 1)  # replicated edges
    cols_at = torch.arange(-half, segments * length + half).clamp_(0, w - 1)
    by_column = ranks.transpose(1, 2)[:, cols_at][:, :, rows_at]  # (P, columns, H + 2·half), padded
    out = torch.empty(p, h, w, dtype=torch.int64)
    for first in range(0, p, group):
        planes = by_column[first : first + group]
        g = planes.shape[0]
        for top in range(0, h, block):
            rows = min(block, h - top)
            strip = planes[:, :, top : top + rows + 2 * half]
            shape = (length + 2 * half, g, segments, rows, window)
            ranks_at, bins_at = (_segment_windows(t, shape) for t in (strip, strip >> (fine.bit_length() - 1)))
            medians = _slide(ranks_at, bins_at, fine, coarse, (window * window + 1) // 2)  # (length, g·segments·rows)
            medians = medians.view(length, g, segments, rows).permute(1, 2, 0, 3).reshape(g, segments * length, rows)
            out[first : first + g, top : top + rows] = medians[:, :w].transpose(1, 2)
    return out


def _segment_windows(t: Tensor, shape: tuple[int, int, int, int, int]) -> Tensor:
    """A view of padded (planes, columns, rows) `t`:
    [step, plane, segment, row, k] = t[plane, segment·length + step, row + k]."""
    steps, _, _, _, window = shape
    length = steps - (window - 1)
    plane, column, row = t.stride()
    return t.as_strided(shape, (column, plane, column * length, row, row))


def _slide(columns: Tensor, coarse_columns: Tensor, fine: int, coarse: int, kth: int) -> Tensor:
    """(steps, lanes): the kth smallest rank of each lane's row window, step by step
    (sliding_median_ranks). columns[c]: each lane's (plane, segment, row) window of its c-th padded
    column, (planes, segments, rows, window); coarse_columns: their coarse bins (rank // fine)."""
    steps, *lanes_shape, window = columns.shape
    lanes = math.prod(lanes_shape)
    dtype = torch.int16 if window * window <= torch.iinfo(torch.int16).max else torch.int32
    hist = torch.zeros(lanes * coarse, fine, dtype=dtype)
    counts = hist.view(*lanes_shape, -1)
    coarse_hist = torch.zeros(lanes, coarse, dtype=dtype)
    coarse_counts = coarse_hist.view(*lanes_shape, coarse)
    add = torch.ones(*lanes_shape, window, dtype=dtype)
    remove = -add

    def count(c: int, by: Tensor) -> None:
        counts.scatter_add_(-1, columns[c], by)
        coarse_counts.scatter_add_(-1, coarse_columns[c], by)

    for c in range(window):
        count(c, add)
    coarse_cum = torch.empty(lanes, coarse, dtype=dtype)
    fine_cum = torch.empty(lanes, fine, dtype=dtype)
    target = torch.full((lanes, 1), kth, dtype=dtype)
    lane_start = torch.arange(lanes) * coarse  # each lane's first coarse bin in hist
    out = torch.empty(steps - window + 1, lanes, dtype=torch.int64)
    for j in range(out.shape[0]):
        if j:
            count(j - 1, remove)
            count(j + window - 1, add)
        torch.cumsum(coarse_hist, 1, out=coarse_cum)
        bin_ = torch.searchsorted(coarse_cum, target)  # the first coarse bin that reaches the kth value
        rest = target - coarse_cum.gather(1, bin_) + coarse_hist.gather(1, bin_)  # its place within that bin
        torch.cumsum(hist.index_select(0, lane_start + bin_[:, 0]), 1, out=fine_cum)
        torch.add(torch.searchsorted(fine_cum, rest)[:, 0], bin_[:, 0], alpha=fine, out=out[j])
    return out


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
        tp, tn = layer.transposes(s, ["pos", "neg"], x)  # one call: onto 2 channels costs as much as onto 1
        rel = above * tp + below * tn
        return Step(rel, s.new_zeros(s.shape[0]))  # b - b+ - b- = 0: biases cancel, as in z^B
