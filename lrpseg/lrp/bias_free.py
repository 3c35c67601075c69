"""Bias-free variants of the LRP rules (zennit's `zero_params='bias'`).

A bias-free rule explains each layer's output as if its bias (after BatchNorm
folding: conv bias and BN shift) were zero: the denominators hold only the
contributions of the inputs, so no relevance is absorbed by biases. This is the
choice that keeps relevance conserved on the shipped U-Net (docs/lrp.md).
"""

from __future__ import annotations

import weakref

from torch import Tensor

from lrpseg.lrp.layers import Layer
from lrpseg.lrp.rules import Rule, Step


class _NoBiasLayer(Layer):
    """The same module seen with its bias set to zero (own cache of derived weights)."""

    @property
    def bias(self) -> Tensor | None:
        return None


_VIEWS: weakref.WeakKeyDictionary[Layer, _NoBiasLayer] = weakref.WeakKeyDictionary()


def without_bias(layer: Layer) -> Layer:
    """The cached bias-free view of `layer` (derived weights are made once)."""
    view = _VIEWS.get(layer)
    if view is None or view.module is not layer.module:
        view = _VIEWS[layer] = _NoBiasLayer(layer.module)
    return view


def _drop_bias(layer: Layer, z: Tensor) -> Tensor:
    """The pre-activation without the bias term: what the layer computes with b = 0."""
    b = layer.bias
    if b is None:
        return z
    return z - (b if layer.is_linear else b.view(1, -1, *[1] * (z.dim() - 2)))


class BiasFree(Rule):
    """`inner` applied as if the layer had no bias: conservation up to the stabiliser."""

    def __init__(self, inner: Rule) -> None:
        if not inner.parametric:
            raise ValueError(f"{inner!r} is not a rule for parametric layers")
        self.inner = inner
        self.name = f"{inner.name}-nobias"

    @property
    def uses_output(self) -> bool:  # type: ignore[override]
        return self.inner.uses_output

    def step(self, layer: Layer, x: Tensor, z: Tensor | None, r: Tensor, *, nonneg: bool = False) -> Step:
        z_free = None if z is None else _drop_bias(layer, z)
        return self.inner.step(without_bias(layer), x, z_free, r, nonneg=nonneg)
