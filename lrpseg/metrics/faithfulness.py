"""Pixel-level deletion and insertion curves (Petsiuk et al. 2018) and their difference.

Region perturbation with 8x8 patches saturates on the segmentation U-Net: the first
1 % of pixels already drop the score to its floor, so every method scores the same
(issue 14). Here single pixels are moved in the explanation's order:

- deletion: the `k` most relevant pixels take the fill value (MoRF); a faithful map
  makes the score fall fast, so a *small* area under the curve is good;
- insertion: start from the all-fill image and put back the `k` most relevant pixels;
  a faithful map makes the score rise fast, so a *large* area is good;
- difference = insertion AUC - deletion AUC: one number, larger = more faithful,
  about 0 for a random order.

Curves are the score divided by the score of the unperturbed image, at the fractions
0, 1/steps, ..., 1 of the pixels; AUCs are trapezoids over the fraction in [0, 1].
The score is that of the explained output (for a segmenter: Σ logits x mask of the
explained class, mask fixed from the unperturbed prediction). All 2 (steps + 1)
perturbed images go through `forward` in batches under torch.inference_mode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from lrpseg.metrics.errors import InvalidScoreError, MetricInputError, ShapeMismatchError
from lrpseg.metrics.perturbation import Baseline, baseline_value, pixel_relevance

Order = Literal["relevance", "random"]
DEFAULT_STEPS = 20


def pixel_ranks(relevance: Tensor, order: Order = "relevance", seed: int = 0) -> Tensor:
    """(H, W) position of each pixel in the order: 0 = the most relevant (ties: raster order)."""
    flat = relevance.flatten().to(torch.float64)
    n = flat.numel()
    if order == "relevance":
        ranking = torch.sort(flat, descending=True, stable=True).indices
    elif order == "random":
        ranking = torch.from_numpy(np.random.default_rng(seed).permutation(n)).to(flat.device)
    else:
        raise MetricInputError(f"order must be 'relevance' or 'random', got {order!r}")
    position = torch.empty(n, dtype=torch.long, device=flat.device)
    position[ranking] = torch.arange(n, device=flat.device)
    return position.reshape(relevance.shape)


def auc(curve: list[float] | np.ndarray) -> float:
    """Trapezoid area of a curve sampled at equal steps over [0, 1]."""
    y = np.asarray(curve, dtype=np.float64)
    return float(((y[1:] + y[:-1]) / 2).sum() / (len(y) - 1))


def deletion_insertion(
    forward: Callable[[Tensor], Tensor],
    x: Tensor,
    relevance: Any,
    score_fn: Callable[[Tensor], Tensor],
    *,
    steps: int = DEFAULT_STEPS,
    batch_size: int = 16,
    baseline: Baseline = "mean",
    order: Order = "relevance",
    seed: int = 0,
) -> dict[str, Any]:
    """Deletion and insertion curves of one image (1, C, H, W) in the order of `relevance`
    ((H, W) or (C, H, W), summed over channels); `order="random"` ignores it (seeded).

    forward: the model; score_fn: its output -> (B,) score of what was explained.
    Returns deletion / insertion (normalised curves), deletion_auc, insertion_auc,
    difference (insertion_auc - deletion_auc), fractions, score (unperturbed) and the settings.
    """
    if x.dim() != 4 or x.shape[0] != 1:
        raise ShapeMismatchError(f"x must be one image (1, C, H, W), got shape {tuple(x.shape)}")
    if steps < 1 or batch_size < 1:
        raise MetricInputError("steps and batch_size must be positive")
    ranks = pixel_ranks(pixel_relevance(relevance, x), order, seed)
    n = ranks.numel()
    counts = torch.tensor([round(k * n / steps) for k in range(steps + 1)], device=x.device)
    fill = baseline_value(x, baseline).expand_as(x)
    # row i < steps + 1: deletion of counts[i] pixels; the rest: insertion of counts[i - steps - 1]
    kept_top = torch.cat([counts, counts])
    delete = torch.arange(2 * (steps + 1), device=x.device) <= steps
    scores: list[Tensor] = []
    with torch.inference_mode():
        for start in range(0, 2 * (steps + 1), batch_size):
            top = (ranks.unsqueeze(0) < kept_top[start : start + batch_size].view(-1, 1, 1)).unsqueeze(1)
            is_del = delete[start : start + batch_size].view(-1, 1, 1, 1)
            # deletion: top pixels take the fill; insertion: only top pixels keep the image
            batch = torch.where(top == is_del, fill, x)
            score = score_fn(forward(batch))
            if score.numel() != top.shape[0]:
                raise ShapeMismatchError(f"score_fn must return one score per image, got shape {tuple(score.shape)}")
            scores.append(score.reshape(-1).to(torch.float64).cpu())
    raw = torch.cat(scores)
    reference = float(raw[0])
    if reference == 0 or not np.isfinite(reference):
        raise InvalidScoreError(f"the unperturbed score is {reference}: nothing to normalise the curves by")
    deletion, insertion = (raw[: steps + 1] / reference).tolist(), (raw[steps + 1 :] / reference).tolist()
    d_auc, i_auc = auc(deletion), auc(insertion)
    return {
        "deletion": deletion,
        "insertion": insertion,
        "deletion_auc": d_auc,
        "insertion_auc": i_auc,
        "difference": i_auc - d_auc,
        "fractions": (counts.cpu().double() / n).tolist(),
        "score": reference,
        "steps": steps,
        "order": order,
        "baseline": baseline,
    }


def input_gradient(forward: Callable[[Tensor], Tensor], x: Tensor, score_fn: Callable[[Tensor], Tensor]) -> Tensor:
    """d score / d x (shape of x): the plain-gradient baseline map."""
    leaf = x.detach().clone().requires_grad_()
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(score_fn(forward(leaf)).sum(), leaf)
    return grad.detach()


def with_baselines(
    forward: Callable[[Tensor], Tensor],
    x: Tensor,
    relevance: Any,
    score_fn: Callable[[Tensor], Tensor],
    **kwargs: Any,
) -> dict[str, dict[str, Any]]:
    """The curves of `relevance` and, in the same run, of a random order and the plain gradient."""
    return {
        "explanation": deletion_insertion(forward, x, relevance, score_fn, **kwargs),
        "random": deletion_insertion(forward, x, relevance, score_fn, order="random", **kwargs),
        "gradient": deletion_insertion(forward, x, input_gradient(forward, x, score_fn)[0], score_fn, **kwargs),
    }
