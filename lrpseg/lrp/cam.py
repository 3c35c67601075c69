"""CAM baselines for segmentation (seed 004) over the same pixel set as LRP.

y = Σ_{(i,j) in M} logits^c_ij = Σ logits * mask, A = the chosen layer's output.
Seg-Grad-CAM: Σ_k mean_ij(dy/dA_k) A_k.  Seg-HiRes-Grad-CAM: Σ_k dy/dA_k ⊙ A_k.
Both are upsampled (bilinear) to the input size; `relu=False` keeps the sign,
which pytorch-grad-cam always clamps away.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from lrpseg.lrp.engine import PreparedModel, prepare
from lrpseg.lrp.graph import Kind


def default_layer(model: nn.Module, x: Tensor) -> str:
    """The layer CAM reads by default, found in data flow (never by module name).

    Segmenters (spatial logits): the last full-resolution decoder feature map —
    the last module output, in data-flow order, before the head (the parametric
    layer with no parametric layer after it) that is as large as the head's
    output (for a U-Net: what the 1x1 head reads). At the
    10x10 bottleneck CAM is no better than random (issue 14). Classifiers (logits
    without space): the deepest feature map, i.e. the smallest spatial output, last
    in data flow (Grad-CAM's usual choice).
    """
    prepared = prepare(model, x)
    env, logits = prepared.forward(x[:1])
    spatial = [
        (order, node, value)
        for order, node in enumerate(prepared.gm.graph.nodes)
        if node.op == "call_module" and isinstance(value := env.get(node), Tensor) and value.dim() == x.dim()
    ]
    heads = [order for order, node in enumerate(prepared.gm.graph.nodes) if _is_head(prepared, node)]
    if logits.dim() == x.dim() and heads:
        head_area = _area(env[list(prepared.gm.graph.nodes)[heads[-1]]])
        full = [node for order, node, value in spatial if order < heads[-1] and _area(value) >= head_area]
        if full:
            return str(full[-1].target)
    best: tuple[int, int, str] | None = None
    for order, node, value in spatial:
        area = _area(value)
        if best is None or (area, -order) <= (best[0], -best[1]):
            best = (area, order, str(node.target))
    if best is None:
        raise ValueError("the model has no module with a spatial output to take CAM from")
    return best[2]


def _area(value: Tensor) -> int:
    return int(torch.tensor(value.shape[2:]).prod())


def _is_head(prepared: PreparedModel, node: fx.Node) -> bool:
    info = prepared.infos.get(node)
    return info is not None and info.kind is Kind.PARAM and info.roles.head


def seg_grad_cam(
    model: nn.Module,
    x: Tensor,
    mask: Tensor,
    *,
    layer: str | None = None,
    variant: Literal["grad", "hires"] = "grad",
    relu: bool = True,
) -> Tensor:
    """(N, H, W) heatmap for the pixel set `mask` (the logits' shape: pixels x class channel)."""
    if variant not in ("grad", "hires"):
        raise ValueError(f"variant must be 'grad' or 'hires', got {variant!r}")
    prepared = prepare(model, x)
    layer = layer or default_layer(model, x)
    nodes = [n for n in prepared.gm.graph.nodes if n.op == "call_module" and n.target == layer]
    if not nodes:
        raise ValueError(f"no module named {layer!r} in the model")
    # the input carries the graph: registry models have frozen (requires_grad=False) weights
    env, logits = prepared.forward(x.detach().requires_grad_(), grad=True)
    if mask.shape != logits.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)}, the model output has {tuple(logits.shape)}")
    activation = env[nodes[0]]
    (grads,) = torch.autograd.grad((logits * mask).sum(), activation)
    activation = activation.detach()
    if variant == "grad":
        weights = grads.mean(dim=tuple(range(2, grads.dim())), keepdim=True)
        cam = (weights * activation).sum(1)
    else:
        cam = (grads * activation).sum(1)
    cam = F.interpolate(cam.unsqueeze(1), size=x.shape[2:], mode="bilinear", align_corners=False).squeeze(1)
    return cam.clamp(min=0) if relu else cam
