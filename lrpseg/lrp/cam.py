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
from torch import Tensor, nn

from lrpseg.lrp.engine import prepare


def default_layer(model: nn.Module, x: Tensor) -> str:
    """The deepest feature map: the module output with the smallest spatial size, last in data flow."""
    prepared = prepare(model)
    env, _ = prepared.forward(x[:1])
    best: tuple[int, int, str] | None = None
    for order, node in enumerate(prepared.gm.graph.nodes):
        value = env.get(node)
        if node.op == "call_module" and isinstance(value, Tensor) and value.dim() == x.dim():
            area = int(torch.tensor(value.shape[2:]).prod())
            if best is None or (area, -order) <= (best[0], -best[1]):
                best = (area, order, str(node.target))
    if best is None:
        raise ValueError("the model has no module with a spatial output to take CAM from")
    return best[2]


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
    prepared = prepare(model)
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
