"""explain(): forward once, pick the target, propagate once, report conservation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lrpseg.lrp.composites import Bounds
from lrpseg.lrp.engine import Rules, default_bounds, prepare, record
from lrpseg.lrp.targets import Target, all_classes_mask, predicted_class_mask, region_mask

DEGENERATE = 1e-12  # |Σ M_a| below this (relative to the largest) is left out of region-normalized


@dataclass
class Explanation:
    relevance: Tensor  # (N, C, H, W)
    logits: Tensor
    r_out: Tensor  # initial relevance at the output (for region-normalized: the normalised weights)
    conservation: Tensor  # (N,) Σ relevance / Σ r_out
    bias_share: Tensor  # (N,) Σ bias relevance / Σ r_out
    stabilizer_share: Tensor  # (N,) Σ relevance the stabilisers absorbed / Σ r_out (the three shares add to 1)
    channel_shares: Tensor  # (N, C) Σ_c relevance / Σ relevance
    mask: Tensor  # the explained pixel set on the output (logits' shape)


def channel_shares(relevance: Tensor) -> Tensor:
    """Per-input-channel share of the total relevance (seed 003: which channel mattered)."""
    per_channel = relevance.flatten(2).sum(2)
    total = per_channel.sum(1, keepdim=True)
    return per_channel / torch.where(total == 0, torch.ones_like(total), total)


def _ratio(a: Tensor, b: Tensor) -> Tensor:
    return a / torch.where(b == 0, torch.ones_like(b), b)


def explain(
    model: nn.Module,
    x: Tensor,
    *,
    target: Target = "class",
    cls: int | None = None,
    region: Tensor | None = None,
    rules: Rules = "ours",
    bounds: Bounds | None = None,
    precision: torch.dtype = torch.float32,
) -> Explanation:
    """Explain the whole output of `model` at `x` in one backward sweep.

    target: "class" (pixels predicted as `cls`), "region" (`region` on channel
    `cls`), "region-normalized" (seed 003: every location of the region
    contributes equally, M_A = Σ_a M_a / ΣM_a), "all" (every pixel's predicted class).
    precision: the forward's format (bf16/fp16 under autocast); the sweep runs in float32.
    """
    prepared = prepare(model, x)
    resolved = prepared.resolve(rules, bounds if bounds is not None else default_bounds(x))
    env, logits = record(prepared, x, prepared.kept(resolved, x=x), None, precision)
    if target == "class":
        mask = predicted_class_mask(logits, cls)
    elif target == "all":
        mask = all_classes_mask(logits)
    elif target in ("region", "region-normalized"):
        if region is None or cls is None:
            raise ValueError(f"target {target!r} needs both cls and region")
        mask = region_mask(logits, cls, region)
    else:
        raise ValueError(f"unknown target {target!r}; use class, region, region-normalized or all")
    if target == "region-normalized":
        r_out = mask * _location_weights(prepared, env, logits, resolved)
        reference = mask.flatten(1).sum(1)  # each location contributes 1
    else:
        r_out = logits * mask
        reference = r_out.flatten(1).sum(1)
    absorbed: dict[str, Tensor] = {}
    relevance, bias = prepared.backward(env, r_out, resolved, absorbed, free=True)
    del env
    return Explanation(
        relevance=relevance,
        logits=logits,
        r_out=r_out,
        conservation=_ratio(relevance.flatten(1).sum(1), reference),
        bias_share=_ratio(bias, reference),
        stabilizer_share=_ratio(absorbed.get("stabilizer", torch.zeros_like(bias)), reference),
        channel_shares=channel_shares(relevance),
        mask=mask,
    )


def _location_weights(prepared, env, logits: Tensor, rules) -> Tensor:
    """1 / ΣM_a for every output location a, for all locations in one pass.

    The LRP sweep is linear in r_out: M_a = L(e_a). So ΣM_a = (L^T 1)_a, which
    is the gradient of Σ L(v) with respect to v — one differentiated sweep
    instead of a loop over pixels.
    """
    v = torch.zeros_like(logits, requires_grad=True)
    with torch.enable_grad():
        relevance, _ = prepared.backward(env, v, rules)
        (totals,) = torch.autograd.grad(relevance.sum(), v)
    scale = totals.abs().flatten(1).amax(1).clamp_min(torch.finfo(totals.dtype).tiny)
    scale = scale.reshape(-1, *[1] * (totals.dim() - 1))
    ok = totals.abs() > DEGENERATE * scale
    return torch.where(ok, 1 / torch.where(ok, totals, torch.ones_like(totals)), torch.zeros_like(totals))
