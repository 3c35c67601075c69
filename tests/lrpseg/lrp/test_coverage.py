"""The ops users' networks bring: norms, non-ReLU activations, gates, 3-D, dict outputs.

References are written here independently of the engine: the same network with
σ (or the gate) detached by hand, differentiated by autograd.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lrpseg import lrp

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _norm(x: Tensor, dims: tuple[int, ...], detach: bool, eps: float = 1e-5) -> Tensor:
    """(x - mean) / σ over dims, σ optionally detached (the reference of the σ-constant rule)."""
    var = x.var(dim=dims, unbiased=False, keepdim=True)
    return (x - x.mean(dim=dims, keepdim=True)) / torch.sqrt((var.detach() if detach else var) + eps)


class Net3d(nn.Module):
    """A 3-D U-Net step: Conv3d, InstanceNorm3d, PReLU, max-pool, GroupNorm, ConvTranspose3d,
    trilinear upsampling, a residual add, cat, SE gate, LayerNorm over channels last, dict output.
    `reference=True` computes the norms by hand with σ detached and the gate detached."""

    def __init__(self, reference: bool = False, dims: int = 3) -> None:
        super().__init__()
        conv, convt = (nn.Conv3d, nn.ConvTranspose3d) if dims == 3 else (nn.Conv2d, nn.ConvTranspose2d)
        inorm = nn.InstanceNorm3d if dims == 3 else nn.InstanceNorm2d
        self.reference, self.dims = reference, dims
        self.c1 = conv(1, 4, 3, padding=1)
        self.n1 = inorm(4, affine=True)
        self.a1 = nn.PReLU()
        self.pool = nn.MaxPool3d(2) if dims == 3 else nn.MaxPool2d(2)
        self.c2 = conv(4, 8, 3, padding=2, dilation=2)
        self.n2 = nn.GroupNorm(2, 8)
        self.a2 = nn.LeakyReLU(0.1)
        self.dw = conv(8, 8, 3, padding=1, groups=8)  # depthwise
        self.se = conv(8, 8, 1)
        self.up = convt(8, 4, 2, stride=2)
        self.c3 = conv(8, 4, 3, padding=1, groups=2)  # grouped, after cat
        self.ln = nn.LayerNorm(4)
        self.head = conv(4, 2, 1)

    def _n1(self, x: Tensor) -> Tensor:
        if not self.reference:
            return self.n1(x)
        shape = (1, -1) + (1,) * self.dims
        y = _norm(x, tuple(range(2, 2 + self.dims)), True)
        return y * self.n1.weight.reshape(shape) + self.n1.bias.reshape(shape)

    def _n2(self, x: Tensor) -> Tensor:
        if not self.reference:
            return self.n2(x)
        shape = (1, -1) + (1,) * self.dims
        y = _norm(x.reshape(x.shape[0], 2, -1), (2,), True).reshape(x.shape)
        return y * self.n2.weight.reshape(shape) + self.n2.bias.reshape(shape)

    def _ln(self, x: Tensor) -> Tensor:
        x = x.movedim(1, -1)
        y = self.ln(x) if not self.reference else _norm(x, (-1,), True) * self.ln.weight + self.ln.bias
        return y.movedim(-1, 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        s = self.a1(self._n1(self.c1(x)))
        d = self.a2(self._n2(self.c2(self.pool(s))))
        d = d + self.dw(d)  # residual add
        gate = torch.sigmoid(self.se(d.mean(dim=tuple(range(2, 2 + self.dims)), keepdim=True)))
        d = d * (gate.detach() if self.reference else gate)  # squeeze-and-excitation
        mode = "trilinear" if self.dims == 3 else "bilinear"
        u = self.up(d) + F.interpolate(d[:, :4], scale_factor=2, mode=mode, align_corners=False)
        h = self._ln(self.c3(torch.cat([u, s], dim=1)))
        return {"out": self.head(h), "aux": h.mean()}


def _pair(dims: int, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    model = Net3d(dims=dims).double().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.InstanceNorm3d, nn.InstanceNorm2d, nn.GroupNorm, nn.LayerNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    reference = Net3d(reference=True, dims=dims).double().eval()
    reference.load_state_dict(model.state_dict())
    return model, reference


@pytest.mark.parametrize("dims", [2, 3])
def test_lrp0_equals_gradient_times_input_with_sigma_and_gate_held(dims: int) -> None:
    """LRP-0 + Pass + vanishing stabilisers == Gradient×Input of the network whose σ and gates are
    constants: the rules for norms, gates, 3-D convs, dilated/grouped/depthwise convs, cat, add,
    trilinear upsampling and max-pooling are exact."""
    model, reference = _pair(dims)
    x = torch.randn(2, 1, *(8,) * dims, dtype=torch.float64)
    prepared = lrp.prepare(model)
    kinds = {i.kind.value for i in prepared.infos.values()}
    assert {"stats", "gate", "add", "norm", "pass", "gradient", "param"} <= kinds
    logits = prepared.forward(x)[1]
    mask = (torch.rand_like(logits) > 0.5).to(logits)
    exact = {i.name: lrp.Norm(1e-300) for i in prepared.infos.values() if i.kind.value in ("norm", "add", "stats")}
    relevance = lrp.propagate(model, x, logits * mask, rules={"*": lrp.Zero(), **exact})
    xg = x.clone().requires_grad_()
    out = reference(xg)["out"]
    assert torch.allclose(out, logits, rtol=1e-12, atol=1e-12)
    (g,) = torch.autograd.grad(out, xg, mask)
    expected = g * x
    assert float((relevance - expected).abs().max() / expected.abs().max()) < 1e-9


def test_norm_without_affine_bias_conserves() -> None:
    """InstanceNorm without bias between bias-free convs: the σ-constant rule loses nothing."""

    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv3d(1, 3, 3, padding=1, bias=False)
            self.n = nn.InstanceNorm3d(3)
            self.a = nn.SiLU()
            self.c2 = nn.Conv3d(3, 2, 1, bias=False)

        def forward(self, x: Tensor) -> Tensor:
            return self.c2(self.a(self.n(self.c1(x))))

    torch.manual_seed(3)
    model = Plain().double().eval()
    x = torch.randn(2, 1, 6, 6, 6, dtype=torch.float64)
    result = lrp.run(model, x, lambda out: out, rules={"*": lrp.Epsilon(1e-12)})
    ratio = result.relevance.flatten(1).sum(1) / result.r_out.flatten(1).sum(1)
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-6)


@pytest.mark.parametrize("composite", list(lrp.COMPOSITES))
def test_every_composite_gives_finite_relevance_in_3d(composite: str) -> None:
    model, _ = _pair(3)
    x = torch.randn(1, 1, 8, 8, 8, dtype=torch.float64)
    expl = lrp.explain(model, x, target="all", rules=composite, bounds=(-4.0, 4.0))
    assert expl.relevance.shape == x.shape and bool(torch.isfinite(expl.relevance).all())


def test_gate_branch_needs_no_rule() -> None:
    """Ops only on a gate's branch (here an unsupported cumsum) receive no relevance: no error."""

    class GateOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, x: Tensor) -> Tensor:
            y = self.c(x)
            return y * torch.sigmoid(torch.cumsum(y, dim=1))

    model = GateOnly().double().eval()
    x = torch.randn(1, 1, 5, 5, dtype=torch.float64)
    assert torch.isfinite(lrp.propagate(model, x, lambda o: o, rules="epsilon")).all()
    assert "cumsum" not in {i.node.name for i in lrp.prepare(model).infos.values()}
