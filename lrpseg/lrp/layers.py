"""Parametric linear layers seen as (forward with any weights, transposed map) pairs.

Rules only need two operations of a Conv/ConvTranspose/Linear layer: evaluate it
with modified weights, and apply the transpose of its weight to a tensor shaped
like the output (the input-gradient). Modified weights are derived once per
layer and cached, so repeated explanations pay nothing for them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

ParamPair = tuple[Tensor, Tensor | None]


def clamp_pos(t: Tensor) -> Tensor:
    """Makes the cached "pos" variant (w+, b+)."""
    return t.clamp(min=0)


def clamp_neg(t: Tensor) -> Tensor:
    """Makes the cached "neg" variant (w-, b-)."""
    return t.clamp(max=0)


class Layer:
    """A Conv1/2/3d, ConvTranspose1/2/3d or Linear module with cached weight variants."""

    def __init__(self, module: nn.Module) -> None:
        if isinstance(module, nn.modules.conv._ConvNd) and module.padding_mode != "zeros":
            raise ValueError(f"padding_mode={module.padding_mode!r} is not supported, only 'zeros'")
        self.module = module
        self.is_linear = isinstance(module, nn.Linear)
        self._cache: dict[str, ParamPair] = {}

    @property
    def weight(self) -> Tensor:
        return self.module.weight.detach()

    @property
    def bias(self) -> Tensor | None:
        b = self.module.bias
        return None if b is None else b.detach()

    def params(self, kind: str, make: Callable[[Tensor], Tensor] | None = None) -> ParamPair:
        """Weight and bias transformed by `make` (applied to both), cached under `kind`."""
        if kind == "plain":
            return self.weight, self.bias
        if kind not in self._cache:
            if make is None:
                raise KeyError(kind)
            b = self.bias
            self._cache[kind] = (make(self.weight), None if b is None else make(b))
        return self._cache[kind]

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        m = self.module
        if self.is_linear:
            return nn.functional.linear(x, weight, bias)
        return torch.ops.aten.convolution(
            x, weight, bias, m.stride, m.padding, m.dilation, m.transposed, m.output_padding, m.groups
        )

    def positive_part(self, x: Tensor, mixed: bool) -> Tensor:
        """f(x+, w+) + f(x-, w-) + b+: every positive contribution to each output.

        `mixed`: x has negative entries. Then x+ and x- are made one at a time, each freed
        after its call (no stacked copy of both): the negative part is z - this, by linearity.
        """
        wp, bp = self.params("pos", clamp_pos)
        if not mixed:
            return self.forward(x, wp, bp)
        wn, _ = self.params("neg", clamp_neg)
        out = self.forward(x.clamp(min=0), wp, bp)
        return out.add_(self.forward(x.clamp(max=0), wn))

    def transpose_sum(self, pairs: list[tuple[Tensor, str]], x: Tensor) -> Tensor:
        """Σ_i weight_i^T s_i in one call: the s_i and cached weights are stacked along
        the output channels (groups=1), so two transposed maps cost one larger call."""
        weights = [self.params(kind)[0] for _, kind in pairs]
        if len(pairs) == 1 or self.module_groups != 1:
            return sum(self.transpose(s, w, x) for (s, _), w in zip(pairs, weights))  # type: ignore[return-value]
        key = "stack:" + "|".join(kind for _, kind in pairs)
        if key not in self._cache:
            self._cache[key] = (torch.cat(weights, dim=self._out_dim), None)
        stacked = torch.cat([s for s, _ in pairs], dim=-1 if self.is_linear else 1)
        return self.transpose(stacked, self._cache[key][0], x)

    @property
    def module_groups(self) -> int:
        return 1 if self.is_linear else int(self.module.groups)

    @property
    def _out_dim(self) -> int:
        """The weight dimension that indexes output channels."""
        return 1 if getattr(self.module, "transposed", False) else 0

    def transpose(self, s: Tensor, weight: Tensor, x: Tensor) -> Tensor:
        """Apply weight^T to `s` (output-shaped); the result has the shape of `x`."""
        m = self.module
        if self.is_linear:
            return s @ weight
        return torch.ops.aten.convolution_backward(
            s,
            x,
            weight,
            None,
            m.stride,
            m.padding,
            m.dilation,
            m.transposed,
            m.output_padding,
            m.groups,
            [True, False, False],
        )[0]
