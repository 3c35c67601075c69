"""Faithfulness: region perturbation (Samek et al. 2017) and its AOPC, with batched forward passes.

Opt-in: it costs (steps + 1) / batch_size forward passes of batch_size images.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from lrpseg.metrics.errors import InvalidScoreError, MetricInputError, ShapeMismatchError

Baseline = Literal["mean", "zero"] | float
Order = Literal["morf", "lerf", "random"]
MAX_DEFAULT_STEPS = 100


def patch_ranks(relevance: Tensor, patch: int, order: Order, seed: int) -> tuple[Tensor, int]:
    """(H, W) map of each pixel's patch position in the removal order, and the patch count.

    Patches tile the map from the top-left; those on the bottom/right edges may be
    smaller. A patch's relevance is the sum over its pixels. "morf" removes the
    most relevant patch first, "lerf" the least relevant, "random" a seeded
    random order. Ties keep raster order.
    """
    h, w = relevance.shape
    rows, cols = math.ceil(h / patch), math.ceil(w / patch)
    padded = torch.zeros(rows * patch, cols * patch, dtype=torch.float64, device=relevance.device)
    padded[:h, :w] = relevance.to(torch.float64)
    sums = padded.reshape(rows, patch, cols, patch).sum(dim=(1, 3)).flatten()
    n = sums.numel()
    if order == "morf":
        ranking = torch.sort(sums, descending=True, stable=True).indices
    elif order == "lerf":
        ranking = torch.sort(sums, stable=True).indices
    elif order == "random":
        ranking = torch.from_numpy(np.random.default_rng(seed).permutation(n)).to(relevance.device)
    else:
        raise MetricInputError(f"order must be 'morf', 'lerf' or 'random', got {order!r}")
    position = torch.empty(n, dtype=torch.long, device=relevance.device)
    position[ranking] = torch.arange(n, device=relevance.device)
    grid = position.reshape(rows, cols).repeat_interleave(patch, 0).repeat_interleave(patch, 1)
    return grid[:h, :w], n


def baseline_value(x: Tensor, baseline: Baseline) -> Tensor:
    """What a removed patch is filled with, broadcastable to x (1, C, H, W)."""
    if baseline == "mean":
        return x.mean(dim=(2, 3), keepdim=True)  # each channel's image mean
    if baseline == "zero":
        return torch.zeros((), dtype=x.dtype, device=x.device)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool) and math.isfinite(baseline):
        return torch.tensor(float(baseline), dtype=x.dtype, device=x.device)
    raise MetricInputError(f"baseline must be 'mean', 'zero' or a finite number, got {baseline!r}")


def pixel_relevance(relevance: Any, x: Tensor) -> Tensor:
    """The (H, W) map to rank pixels by: channels summed, checked against the input."""
    r = torch.as_tensor(relevance)
    if r.dim() == 3:
        if r.shape[0] not in (1, x.shape[1]):
            raise ShapeMismatchError(f"relevance has {r.shape[0]} channels, the input {x.shape[1]}")
        r = r.sum(dim=0)
    if r.dim() != 2 or tuple(r.shape) != tuple(x.shape[2:]):
        raise ShapeMismatchError(
            f"relevance shape {tuple(r.shape)} does not match the input's (H, W) {tuple(x.shape[2:])}"
        )
    if not torch.isfinite(r).all():
        raise InvalidScoreError("relevance contains NaN or infinite values")
    return r.detach().to(x.device)


def region_perturbation(
    forward: Callable[[Tensor], Tensor],
    x: Tensor,
    relevance: Any,
    score_fn: Callable[[Tensor], Tensor],
    *,
    patch: int = 8,
    steps: int | None = None,
    patches_per_step: int = 1,
    batch_size: int = 16,
    baseline: Baseline = "mean",
    order: Order = "morf",
    seed: int = 0,
) -> dict[str, Any]:
    """Remove patches in relevance order and follow the score; AOPC summarises the drop.

    forward: the model (x (B, C, H, W) -> output); score_fn: output -> (B,) score
    of what was explained (e.g. the sum of the class logit over its predicted
    pixels). Step k replaces the first k * patches_per_step patches with the
    baseline ("mean": each channel's image mean, "zero", or a number). steps
    defaults to all patches, at most 100. The k = 0..steps images go through
    forward in batches of batch_size under torch.inference_mode.

    Returns curve (score at k = 0..steps), aopc = mean over k of (curve[0] -
    curve[k]) (Samek et al. 2017; larger = the ranking found what the score
    depends on), removed_fraction (share of pixels replaced at each k), and the
    settings used.
    """
    if x.dim() != 4 or x.shape[0] != 1:
        raise ShapeMismatchError(f"x must be one image (1, C, H, W), got shape {tuple(x.shape)}")
    if patch < 1 or patches_per_step < 1 or batch_size < 1:
        raise MetricInputError("patch, patches_per_step and batch_size must be positive")
    r = pixel_relevance(relevance, x)
    ranks, n_patches = patch_ranks(r, patch, order, seed)
    max_steps = math.ceil(n_patches / patches_per_step)
    if steps is None:
        steps = min(max_steps, MAX_DEFAULT_STEPS)
    if not 1 <= steps <= max_steps:
        raise MetricInputError(f"steps must be between 1 and {max_steps} for {n_patches} patches, got {steps}")
    fill = baseline_value(x, baseline)
    removed = torch.arange(steps + 1, device=x.device) * patches_per_step
    scores: list[Tensor] = []
    with torch.inference_mode():
        for start in range(0, steps + 1, batch_size):
            k = removed[start : start + batch_size]
            drop = (ranks.unsqueeze(0) < k.view(-1, 1, 1)).unsqueeze(1)  # (B, 1, H, W)
            batch = torch.where(drop, fill, x)
            score = score_fn(forward(batch))
            if score.numel() != k.numel():
                raise ShapeMismatchError(
                    f"score_fn must return one score per image ({k.numel()}), got shape {tuple(score.shape)}"
                )
            scores.append(score.reshape(-1).to(torch.float64).cpu())
    curve = torch.cat(scores)
    per_patch = torch.bincount(ranks.flatten(), minlength=n_patches).cumsum(0).cpu()
    removed_pixels = [0] + [int(per_patch[min(int(k), n_patches) - 1]) for k in removed[1:]]
    return {
        "curve": curve.tolist(),
        "aopc": float((curve[0] - curve).mean()),
        "removed_fraction": [p / r.numel() for p in removed_pixels],
        "patch": patch,
        "steps": steps,
        "patches_per_step": patches_per_step,
        "order": order,
        "baseline": baseline,
    }
