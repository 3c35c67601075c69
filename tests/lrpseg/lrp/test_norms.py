"""sigma_constant_vjp against autograd through the layer recomputed with σ detached."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from lrpseg import lrp
from lrpseg.lrp.errors import UnsupportedOperationError
from lrpseg.lrp.norms import sigma_constant_vjp


def _normalize(x: Tensor, dims: tuple[int, ...], eps: float) -> Tensor:
    mean = x.mean(dim=dims, keepdim=True)
    return (x - mean) / torch.sqrt(x.detach().var(dim=dims, unbiased=False, keepdim=True) + eps)


def _affine(y: Tensor, weight: Tensor | None, bias: Tensor | None, per_channel: bool = True) -> Tensor:
    """y * weight + bias, per channel or (LayerNorm) elementwise over the trailing dimensions."""
    shape = (1, -1) + (1,) * (y.dim() - 2)
    y = y * (weight.reshape(shape) if per_channel else weight) if weight is not None else y
    return y + (bias.reshape(shape) if per_channel else bias) if bias is not None else y


def sigma_detached(module: nn.Module, x: Tensor) -> Tensor:
    """The layer's output at x with σ detached from the graph (the mean stays a function of x)."""
    if isinstance(module, nn.LayerNorm):
        dims = tuple(range(x.dim() - len(module.normalized_shape), x.dim()))
        return _affine(_normalize(x, dims, module.eps), module.weight, module.bias, per_channel=False)
    if isinstance(module, nn.GroupNorm):
        y = _normalize(x.reshape(x.shape[0], module.num_groups, -1), (2,), module.eps).reshape(x.shape)
        return _affine(y, module.weight, module.bias)
    if module.running_mean is not None and not module.training:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        y = (x - module.running_mean.reshape(shape)) / torch.sqrt(module.running_var.reshape(shape) + module.eps)
        return _affine(y, module.weight, module.bias)
    batch = isinstance(module, nn.modules.batchnorm._BatchNorm)
    dims = ((0,) if batch else ()) + tuple(range(2, x.dim()))
    return _affine(_normalize(x, dims, module.eps), module.weight, module.bias)


def _layers() -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    tracked = nn.InstanceNorm2d(4, affine=True, track_running_stats=True)
    bn_eval = nn.BatchNorm2d(4)
    for m in (tracked, bn_eval):
        m.running_mean.uniform_(-1, 1)
        m.running_var.uniform_(0.5, 2)
        m.eval()
    return [
        ("instance, no affine", nn.InstanceNorm2d(4), (2, 4, 5, 6)),
        ("instance 3-d, affine", nn.InstanceNorm3d(4, affine=True), (2, 4, 3, 4, 5)),
        ("instance, tracked", tracked, (2, 4, 5, 6)),
        ("batch, eval", bn_eval, (2, 4, 5, 6)),
        ("batch, batch statistics", nn.BatchNorm2d(4, track_running_stats=False), (3, 4, 5, 6)),
        ("group", nn.GroupNorm(2, 4), (2, 4, 5, 6)),
        ("layer", nn.LayerNorm([5, 6]), (2, 4, 5, 6)),
        ("layer, no affine", nn.LayerNorm(6, elementwise_affine=False), (2, 4, 5, 6)),
    ]


@pytest.mark.parametrize(("name", "module", "shape"), _layers(), ids=[c[0] for c in _layers()])
def test_vjp_equals_autograd_through_the_layer_with_sigma_detached(
    name: str, module: nn.Module, shape: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(0.5, 1.5)
    x = (torch.randn(*shape, dtype=torch.float64) * 2 + 0.5).requires_grad_()
    s = torch.randn(*shape, dtype=torch.float64)
    with torch.no_grad():  # the reference is the layer itself (σ's value included)
        assert torch.allclose(sigma_detached(module, x), module(x), rtol=1e-12, atol=1e-12)
    (expected,) = torch.autograd.grad(sigma_detached(module, x), x, s)
    got = sigma_constant_vjp(module, x.detach(), s)
    assert float((got - expected).abs().max() / expected.abs().max()) < 1e-12
    assert not got.requires_grad  # γ is a constant: no parameter is tracked


@pytest.mark.parametrize("composite", ["epsilon", "ours", "conserving"])
def test_relevance_of_a_trainable_net_with_norms_tracks_no_parameter(composite: str) -> None:
    """A user's net fresh from training (parameters require grad): the relevance is a plain tensor,
    with no autograd graph holding the sweep's tensors."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.InstanceNorm2d(4, affine=True), nn.ReLU(), nn.Conv2d(4, 2, 1))
    relevance = lrp.propagate(net, torch.randn(1, 1, 8, 8), lambda logits: logits, rules=composite)
    assert not relevance.requires_grad and relevance.numpy().shape == (1, 1, 8, 8)


def test_an_unknown_norm_is_refused() -> None:
    with pytest.raises(UnsupportedOperationError, match="LocalResponseNorm"):
        sigma_constant_vjp(nn.LocalResponseNorm(2), torch.ones(1, 2, 3, 3), torch.ones(1, 2, 3, 3))
