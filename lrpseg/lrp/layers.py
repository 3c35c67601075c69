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


def dense(x: Tensor) -> Tensor:
    """x with its dimensions in memory order (a channels-last tensor permuted): reductions
    over all of it then read memory in order (~4x faster for channels-last on the CPU)."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1)
    return x


def column_min(t: Tensor, block: int = 256) -> Tensor:
    """t.amin(0) for a (rows, C) tensor, over blocks of rows first: one reduction over many rows of
    a few columns is ~30x slower on the CPU (2.7 vs 0.09 ms for 65536 x 16). NaN propagates alike."""
    rows, cols = t.shape
    body = rows - rows % block
    if body == 0:
        return t.amin(0)
    mins = t[:body].reshape(-1, block, cols).amin(0)
    return torch.cat([mins, t[body:]]).amin(0) if body < rows else mins.amin(0)


def _channels_last_strides(shape: torch.Size) -> tuple[int, ...]:
    """The strides of a dense channels-last (N, C, H, W) tensor of this shape."""
    _, c, h, w = shape
    return (c * h * w, 1, w * c, c)


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
            self._cache[kind] = (self._like_weight(make(self.weight)), None if b is None else make(b))
        return self._cache[kind]

    def _like_weight(self, w: Tensor) -> Tensor:
        """A copy of derived weight w in the module weight's memory format, with the strides
        .to(memory_format=...) gives. A channels-last weight with a size-1 dimension (one
        input channel, 1x1 kernels) has two valid stride sets, and oneDNN takes its fast
        path only for this one (a clamped copy of it: the other; 10-15x slower)."""
        weight = self.module.weight
        channels_last = weight.dim() == 4 and weight.stride() == _channels_last_strides(weight.shape)
        fmt = torch.channels_last if channels_last and w.dim() == 4 else torch.contiguous_format
        return torch.empty(w.shape, dtype=w.dtype, device=w.device, memory_format=fmt).copy_(w)

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        m = self.module
        if self.is_linear:
            return nn.functional.linear(x, weight, bias)
        return torch.ops.aten.convolution(
            x, weight, bias, m.stride, m.padding, m.dilation, m.transposed, m.output_padding, m.groups
        )

    def negative_channels(self, x: Tensor, nonneg: bool = False) -> slice | None:
        """The input channels that hold negative values, as one range; None where x >= 0.

        x- terms (x- with w-, the x- side of two-sided rules) are computed on these channels
        only: a U-Net decoder's input is cat(skip >= 0, upsampled mixed), half of it
        non-negative. One min per channel, in memory order; NaN counts as negative.
        `nonneg`: the graph guarantees x >= 0 (a ReLU output), so there is nothing to check."""
        if nonneg:
            return None
        dim = self._channel_dim(x)
        if self.module_groups != 1:
            return None if bool(dense(x).min() >= 0) else slice(0, x.shape[dim])  # no subsets of groups
        if x.dim() == 4 and dim == 1 and x.is_contiguous(memory_format=torch.channels_last):
            mins = column_min(x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]))
        else:
            mins = column_min(x.movedim(dim, -1).reshape(-1, x.shape[dim]))
        negative = [i for i, m in enumerate(mins.tolist()) if not m >= 0]
        return slice(negative[0], negative[-1] + 1) if negative else None

    def _channel_dim(self, x: Tensor) -> int:
        """The dimension of the input that the weight's input channels multiply."""
        return x.dim() - 1 if self.is_linear else 1

    def narrow(self, x: Tensor, channels: slice | None) -> Tensor:
        """x restricted to input channels `channels` (a view; all of x if None)."""
        if channels is None:
            return x
        return x.narrow(self._channel_dim(x), channels.start, channels.stop - channels.start)

    def _partial(self, channels: slice | None, x: Tensor) -> slice | None:
        """`channels` if they are a part of x's input channels, else None (all of them)."""
        return None if channels is None or channels == slice(0, x.shape[self._channel_dim(x)]) else channels

    def positive_part(self, x: Tensor, negative: slice | None) -> Tensor:
        """f(x+, w+) + f(x-, w-) + b+: every positive contribution to each output.

        `negative`: the input channels with negative entries (negative_channels). x+ and x-
        are made one at a time, each freed after its call (no stacked copy of both), x- on
        those channels only: the negative part is z - this, by linearity.
        """
        wp, bp = self.params("pos", clamp_pos)
        if negative is None:
            return self.forward(x, wp, bp)
        part = self._partial(negative, x)
        self.params("neg", clamp_neg)
        out = self.forward(x.clamp(min=0), wp, bp)
        return out.add_(self.forward(self.narrow(x, part).clamp(max=0), self.stacked(["neg"], part)))

    def two_sided(self, x: Tensor, a: Tensor, b: Tensor, negative: slice) -> Tensor:
        """x+ * a + x- * b (zennit's two-sided sum) with b given on the `negative` channels
        only (transpose_sum with those channels); written into a unless autograd tracks them.
        Products and clamps: torch.where costs ~30 elementwise passes on the CPU."""
        part = self._partial(negative, x)
        if a.requires_grad or b.requires_grad:
            if part is not None:  # b as zeros outside the negative channels
                dim = self._channel_dim(x)
                sizes = [part.start, part.stop - part.start, x.shape[dim] - part.stop]
                b = torch.cat([b.new_zeros(b.shape[:dim] + (n,) + b.shape[dim + 1 :]) if i != 1 else b
                               for i, n in enumerate(sizes)], dim=dim)  # fmt: skip
            return a * x.clamp(min=0) + b * x.clamp(max=0)
        if part is not None:  # x >= 0 outside the negative channels: a * x there, no clamped copy
            dim = self._channel_dim(x)
            for start, stop in ((0, part.start), (part.stop, x.shape[dim])):
                if stop > start:
                    a.narrow(dim, start, stop - start).mul_(x.narrow(dim, start, stop - start))
        a_neg, x_neg = self.narrow(a, part), self.narrow(x, part)
        a_neg.mul_(x_neg.clamp(min=0)).addcmul_(b, x_neg.clamp(max=0))
        return a

    def stacked(self, kinds: list[str], channels: slice | None = None) -> Tensor:
        """The cached weights of `kinds` stacked along the output channels and restricted
        to input channels `channels` (all if None)."""
        key = "|".join(kinds) + ("" if channels is None else f"@{channels.start}:{channels.stop}")
        if len(kinds) == 1 and channels is None:
            return self.params(kinds[0])[0]
        if key not in self._cache:
            weights = [self.params(kind)[0] for kind in kinds]
            if channels is not None:
                weights = [w.narrow(self._in_dim, channels.start, channels.stop - channels.start) for w in weights]
            self._cache[key] = (self._like_weight(torch.cat(weights, dim=self._out_dim)), None)
        return self._cache[key][0]

    def transpose_sum(self, pairs: list[tuple[Tensor, str]], x: Tensor, channels: slice | None = None) -> Tensor:
        """Σ_i weight_i^T s_i in one call: the s_i and cached weights are stacked along
        the output channels (groups=1), so two transposed maps cost one larger call.
        With `channels`, only those input channels are computed (x's shape narrowed)."""
        channels = self._partial(channels, x)
        x = self.narrow(x, channels)
        if len(pairs) == 1:
            return self.transpose(pairs[0][0], self.stacked([pairs[0][1]], channels), x)
        if self.module_groups != 1:
            return sum(self.transpose(s, self.params(kind)[0], x) for s, kind in pairs)  # type: ignore[return-value]
        stacked = torch.cat([s for s, _ in pairs], dim=-1 if self.is_linear else 1)
        return self.transpose(stacked, self.stacked([kind for _, kind in pairs], channels), x)

    def transposes(self, s: Tensor, kinds: list[str], x: Tensor) -> list[Tensor]:
        """[weight_i^T s for each kind] in one call: the cached weights are stacked along
        the input channels (groups=1). The same sums as one call per weight (measured
        bitwise), and a transposed map onto one input channel costs as much as onto three."""
        if len(kinds) == 1 or self.module_groups != 1:
            return [self.transpose(s, self.stacked([kind]), x) for kind in kinds]
        key = "each:" + "|".join(kinds)
        if key not in self._cache:
            weights = [self.params(kind)[0] for kind in kinds]
            self._cache[key] = (self._like_weight(torch.cat(weights, dim=self._in_dim)), None)
        dim = self._channel_dim(x)
        shape = list(x.shape)
        shape[dim] *= len(kinds)
        fmt = torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) else None
        like = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=fmt or torch.contiguous_format)
        return list(self.transpose(s, self._cache[key][0], like).chunk(len(kinds), dim=dim))

    @property
    def module_groups(self) -> int:
        return 1 if self.is_linear else int(self.module.groups)

    @property
    def _out_dim(self) -> int:
        """The weight dimension that indexes output channels."""
        return 1 if getattr(self.module, "transposed", False) else 0

    @property
    def _in_dim(self) -> int:
        """The weight dimension that indexes input channels."""
        return 1 - self._out_dim

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
