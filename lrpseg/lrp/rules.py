"""LRP rules as small classes (Montavon et al. 2019), numerically equal to zennit's.

Each rule maps the relevance `r` at a layer's output to its input, given the
layer, its recorded input `x` and pre-activation `z` (from the one forward pass).
Every rule is linear in `r`. Derived weights (w+, w-, w + gamma w+, ...) come
from the layer's cache. Stabilisers follow zennit: z + eps * sign(z), sign(0) = +1.
`bias` in the result is the relevance each sample's biases absorbed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lrpseg.lrp.layers import Layer, clamp_neg, clamp_pos, dense


@dataclass
class Step:
    relevance: Tensor
    bias: Tensor  # (N,) relevance absorbed by this layer's bias terms


def stabilize(z: Tensor, eps: float | Tensor) -> Tensor:
    """z + eps * sign(z) with sign(0) = +1 (zennit's default stabiliser), a new tensor."""
    if not isinstance(eps, Tensor) and not eps:
        return z.clone()
    return _stabilize_(torch.add(z, 0.0), eps)


def _divide(r: Tensor, d: Tensor) -> Tensor:
    """r / d, written into `d` (a fresh denominator) unless autograd tracks r."""
    return r / d if r.requires_grad else torch.div(r, d, out=d)


def _stabilize_(d: Tensor, eps: float | Tensor) -> Tensor:
    """stabilize(d, eps) in place on a fresh tensor d.

    Float arithmetic only: on the CPU torch.where and masks of bools cost ~30 elementwise
    passes. Adding +0.0 turns -0.0 into +0.0, so copysign gives +eps at both zeros."""
    if not isinstance(eps, Tensor):
        if not eps:
            return d
        eps = torch.tensor(eps, dtype=d.dtype, device=d.device)
    d.add_(0.0)
    return d.add_(torch.copysign(eps, d))


def _stabilize_pos(d: Tensor, eps: float) -> Tensor:
    """stabilize(d, eps) in place for d >= 0 (sums of positive contributions): d + eps."""
    return d.add_(eps) if eps else d


def _output(z: Tensor | None) -> Tensor:
    if z is None:
        raise ValueError("this rule reads the layer's output: the engine must record it (uses_output)")
    return z


def _bias_relevance(s: Tensor, bias: Tensor | None) -> Tensor:
    """Σ s_k b_k per sample: the relevance the bias of each output unit took."""
    if bias is None:
        return s.new_zeros(s.shape[0])
    per_unit = s.sum(dim=tuple(range(2, s.dim()))) if s.dim() > 2 else s  # reduce space first
    return per_unit @ bias


class Rule:
    """Base class. `name` is what results and errors report."""

    name = "rule"
    parametric = True  # applies to Conv/ConvTranspose/Linear
    uses_output = True  # reads the layer's recorded output z (False: only its input x)

    def step(self, layer: Layer, x: Tensor, z: Tensor | None, r: Tensor, *, nonneg: bool = False) -> Step:
        """Relevance at the input for relevance `r` at the output. `nonneg`: x >= 0 by construction."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Epsilon(Rule):
    """LRP-epsilon. With relative=True, eps is scaled by the RMS of the layer's
    pre-activations per sample (seed 001's eps = 0.25 std)."""

    name = "epsilon"

    def __init__(self, epsilon: float = 1e-6, relative: bool = False) -> None:
        self.epsilon = epsilon
        self.relative = relative

    def _eps(self, z: Tensor) -> float | Tensor:
        if not self.relative:
            return self.epsilon
        dims = tuple(range(1, z.dim()))
        return self.epsilon * ((z**2).mean(dim=dims, keepdim=True) ** 0.5)  # zennit's formula, same rounding

    def step(self, layer: Layer, x: Tensor, z: Tensor | None, r: Tensor, *, nonneg: bool = False) -> Step:
        z = _output(z)
        s = _divide(r, stabilize(z, self._eps(z)))
        return Step(layer.transpose(s, layer.weight, x).mul_(x), _bias_relevance(s, layer.bias))


class Zero(Epsilon):
    """LRP-0: the epsilon rule without stabiliser (0/0 -> 0 where z is exactly 0)."""

    name = "zero"

    def __init__(self) -> None:
        super().__init__(0.0)

    def step(self, layer: Layer, x: Tensor, z: Tensor | None, r: Tensor, *, nonneg: bool = False) -> Step:
        z = _output(z)
        zero = z == 0
        s = _divide(r, torch.where(zero, 1.0, z).to(z.dtype)).masked_fill_(zero, 0.0)
        return Step(layer.transpose(s, layer.weight, x).mul_(x), _bias_relevance(s, layer.bias))


class Norm(Epsilon):
    """Parameter-free z-rule (epsilon with only a stabiliser); the default for
    upsampling, average pooling and additive merges."""

    name = "norm"
    parametric = True

    def __init__(self, stabilizer: float = 1e-6) -> None:
        super().__init__(stabilizer)


class ZPlus(Rule):
    """z+ rule (alpha=1, beta=0); negative inputs pair with negative weights."""

    name = "zplus"
    uses_output = False

    def __init__(self, stabilizer: float = 1e-6) -> None:
        self.stabilizer = stabilizer

    def step(self, layer: Layer, x: Tensor, z: Tensor | None, r: Tensor, *, nonneg: bool = False) -> Step:
        wp, bp = layer.params("pos", clamp_pos)
        layer.params("neg", clamp_neg)
        negative = layer.negative_channels(x, nonneg)
        s = _divide(r, _stabilize_pos(layer.positive_part(x, negative), self.stabilizer))
        a = layer.transpose(s, wp, x)
        if negative is None:
            return Step(a.mul_(x), _bias_relevance(s, bp))
        rel = layer.two_sided(x, a, layer.transpose_sum([(s, "neg")], x, negative), negative)
        return Step(rel, _bias_relevance(s, bp))


class AlphaBeta(Rule):
    """alpha-beta rule: alpha x positive minus beta x negative contributions."""

    name = "alphabeta"

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6) -> None:
        if alpha < 0 or beta < 0:
            raise ValueError("alpha and beta must be non-negative")
        if alpha - beta != 1:
            raise ValueError("alpha - beta must equal 1 (conservation)")
        self.alpha = alpha
        self.beta = beta
        self.stabilizer = stabilizer

    def step(self, layer: Layer, x: Tensor, z: Tensor | None, r: Tensor, *, nonneg: bool = False) -> Step:
        z = _output(z)
        _wp, bp = layer.params("pos", clamp_pos)
        _wn, bn = layer.params("neg", clamp_neg)
        negative = layer.negative_channels(x, nonneg)
        pos = layer.positive_part(x, negative)
        neg = z - pos  # linearity: all negative contributions + b-
        a_sp = _divide(r, _stabilize_pos(pos, self.stabilizer)).mul_(self.alpha)
        b_sn = _divide(r, _stabilize_(neg, self.stabilizer)).mul_(-self.beta)
        a = layer.transpose_sum([(a_sp, "pos"), (b_sn, "neg")], x)
        if negative is None:
            rel = a.mul_(x)
        else:
            rel = layer.two_sided(x, a, layer.transpose_sum([(a_sp, "neg"), (b_sn, "pos")], x, negative), negative)
        return Step(rel, _bias_relevance(a_sp, bp) + _bias_relevance(b_sn, bn))


class Gamma(Rule):
    """Generalised gamma rule (zennit's): positive outputs are explained with
    w + gamma w+ on x+ and w + gamma w- on x-, negative outputs the other way round."""

    name = "gamma"

    def __init__(self, gamma: float = 0.25, stabilizer: float = 1e-6) -> None:
        if gamma < 0:
            raise ValueError("gamma must be non-negative")
        self.gamma = gamma
        self.stabilizer = stabilizer

    def step(self, layer: Layer, x: Tensor, z: Tensor | None, r: Tensor, *, nonneg: bool = False) -> Step:
        z = _output(z)
        g = self.gamma
        kp, kn = f"gamma+{g}", f"gamma-{g}"
        _wgp, bgp = layer.params(kp, lambda t: t + g * t.clamp(min=0))
        _wgn, bgn = layer.params(kn, lambda t: t + g * t.clamp(max=0))
        negative = layer.negative_channels(x, nonneg)
        p = layer.positive_part(x, negative)  # all positive contributions + b+; z - p: the negative ones + b-
        if _zero_unless_positive(r, z):
            # all relevance sits where z > 0 (a ReLU follows): only w + gamma w+ on x+ and
            # w + gamma w- on x- carry it, and the denominator is z + gamma p > 0 there; elsewhere
            # it is clamped to >= eps, so r = 0 gives 0 (not 0/0)
            sp = _divide(r, torch.add(z, p, alpha=g, out=p).clamp_(min=0).add_(self.stabilizer))
            a = layer.transpose(sp, _wgp, x)
            if negative is None:
                return Step(a.mul_(x), _bias_relevance(sp, bgp))
            rel = layer.two_sided(x, a, layer.transpose_sum([(sp, kn)], x, negative), negative)
            return Step(rel, _bias_relevance(sp, bgp))
        # z > 0: denominator z + gamma p > 0; z < 0: z + gamma (z - p) < 0; z = 0 drops its relevance
        sign = torch.sign(z)  # 1, 0, -1 as floats: masks by products (torch.where costs ~30 passes)
        neg = torch.sub(z, p).mul_(g).add_(z).clamp_(max=0).sub_(self.stabilizer)
        sp = _divide(r * sign.clamp(min=0), p.mul_(g).add_(z).clamp_(min=0).add_(self.stabilizer))
        sn = _divide(r * sign.clamp_(max=0).neg_(), neg)
        a = layer.transpose_sum([(sp, kp), (sn, kn)], x)
        if negative is None:
            rel = a.mul_(x)
        else:
            rel = layer.two_sided(x, a, layer.transpose_sum([(sp, kn), (sn, kp)], x, negative), negative)
        return Step(rel, _bias_relevance(sp, bgp) + _bias_relevance(sn, bgn))


def _zero_unless_positive(r: Tensor, z: Tensor) -> bool:
    """Whether r is exactly 0 wherever z <= 0; NaN or inf: False. (sign(z) - 1) r is 0 at
    z > 0 and -r or -2r elsewhere: float products only, one buffer."""
    with torch.no_grad():
        low, high = torch.aminmax(dense(torch.sign(z).sub_(1).mul_(r)))
    return bool(low == 0) and bool(high == 0)


class ZBox(Rule):
    """z^B rule for the first layer on box-bounded input [low, high] (floats or
    tensors broadcastable to the input, e.g. per channel (1, C, 1, 1))."""

    name = "zbox"

    def __init__(self, low: float | Tensor, high: float | Tensor, stabilizer: float = 1e-6) -> None:
        self.low = low
        self.high = high
        self.stabilizer = stabilizer

    def step(self, layer: Layer, x: Tensor, z: Tensor | None, r: Tensor, *, nonneg: bool = False) -> Step:
        z = _output(z)
        wp, bp = layer.params("pos", clamp_pos)
        wn, bn = layer.params("neg", clamp_neg)
        low = torch.as_tensor(self.low).to(x).expand_as(x)
        high = torch.as_tensor(self.high).to(x).expand_as(x)
        zb = z - (layer.forward(low, wp, bp) + layer.forward(high, wn, bn))
        s = r / stabilize(zb, self.stabilizer)
        t, tp, tn = layer.transposes(s, ["plain", "pos", "neg"], x)  # one call
        rel = x * t - (low * tp + high * tn)
        return Step(rel, s.new_zeros(s.shape[0]))  # b - b+ - b- = 0: biases cancel


class WSquare(Rule):
    """w^2 rule: relevance spread by squared weights, independent of the input."""

    name = "wsquare"
    uses_output = False

    def __init__(self, stabilizer: float = 1e-6) -> None:
        self.stabilizer = stabilizer

    def step(self, layer: Layer, x: Tensor, z: Tensor | None, r: Tensor, *, nonneg: bool = False) -> Step:
        w2, b2 = layer.params("square", lambda t: t**2)
        ones = torch.ones_like(x)
        s = r / stabilize(layer.forward(ones, w2, b2), self.stabilizer)
        return Step(layer.transpose(s, w2, x), _bias_relevance(s, b2))


class Flat(Rule):
    """Flat rule: relevance spread uniformly over each receptive field."""

    name = "flat"
    uses_output = False

    def __init__(self, stabilizer: float = 1e-6) -> None:
        self.stabilizer = stabilizer

    def step(self, layer: Layer, x: Tensor, z: Tensor | None, r: Tensor, *, nonneg: bool = False) -> Step:
        w1, _ = layer.params("ones", torch.ones_like)
        ones = torch.ones_like(x)
        s = r / stabilize(layer.forward(ones, w1), self.stabilizer)
        return Step(layer.transpose(s, w1, x), s.new_zeros(s.shape[0]))


class Pass(Rule):
    """Pass relevance through unchanged (elementwise layers: activations)."""

    name = "pass"
    parametric = False
    uses_output = False

    def step(self, layer: Layer, x: Tensor, z: Tensor | None, r: Tensor, *, nonneg: bool = False) -> Step:
        if r.shape != x.shape:
            raise ValueError("Pass needs a layer whose input and output have the same shape")
        return Step(r, r.new_zeros(r.shape[0]))
