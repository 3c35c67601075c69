"""Normalisation layers as LRP sees them: the standard deviation held constant.

y = γ (x - mean(x)) / σ + β. With σ taken as a constant of the forward pass the
layer is linear in x (the centring is a linear map) plus the bias β, so the z-rule
applies to it like to any linear layer (Ali et al. 2022, "XAI for Transformers:
better explanations through conservative propagation"; Achtibat et al. 2024,
AttnLRP). Without β (MONAI's InstanceNorm default) it conserves relevance exactly.
BatchNorm in eval mode uses its running statistics, which are constants anyway.
`sigma_constant` recomputes the layer with σ detached, so its vector-Jacobian
product is the transpose of that linear map.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lrpseg.lrp.errors import UnsupportedOperationError


def _normalize(x: Tensor, dims: tuple[int, ...], eps: float) -> Tensor:
    """(x - mean) / sqrt(var + eps) over `dims`: the mean stays a function of x, σ is detached."""
    mean = x.mean(dim=dims, keepdim=True)
    var = x.detach().var(dim=dims, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def _channel_affine(y: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    shape = (1, -1) + (1,) * (y.dim() - 2)
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


def sigma_constant(module: nn.Module, x: Tensor) -> Tensor:
    """The output of normalisation `module` at `x`, with σ detached from the graph."""
    if isinstance(module, nn.LayerNorm):
        dims = tuple(range(x.dim() - len(module.normalized_shape), x.dim()))
        y = _normalize(x, dims, module.eps)
        if module.weight is not None:
            y = y * module.weight
        if module.bias is not None:
            y = y + module.bias
        return y
    if isinstance(module, nn.GroupNorm):
        n = x.shape[0]
        grouped = x.reshape(n, module.num_groups, -1)
        y = _normalize(grouped, (2,), module.eps).reshape(x.shape)
        return _channel_affine(y, module.weight, module.bias)
    if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
        uses_running = module.running_mean is not None and not module.training
        if uses_running:  # BatchNorm (eval), InstanceNorm(track_running_stats=True): constants
            shape = (1, -1) + (1,) * (x.dim() - 2)
            mean, var = module.running_mean.reshape(shape), module.running_var.reshape(shape)
            y = (x - mean) / torch.sqrt(var + module.eps)
        else:
            batch = isinstance(module, nn.modules.batchnorm._BatchNorm)
            dims = ((0,) if batch else ()) + tuple(range(2, x.dim()))
            y = _normalize(x, dims, module.eps)
        return _channel_affine(y, module.weight, module.bias)
    raise UnsupportedOperationError(f"no σ-constant form for {type(module).__name__}")
