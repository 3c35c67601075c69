"""Region perturbation on models whose answer is known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from lrpseg.metrics import MetricInputError, ShapeMismatchError, region_perturbation
from lrpseg.models import UNet, UNetConfig


class CountingLinear(nn.Module):
    """f(x) = sum(w * x): its exact relevance is w * x, and removing a patch (baseline 0)
    lowers f by exactly that patch's relevance."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.weight = weight
        self.batches: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.batches.append(x.shape[0])
        return (x * self.weight).flatten(1).sum(1)


def setup(h: int = 20, w: int = 28) -> tuple[CountingLinear, Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 2, h, w, generator=g, dtype=torch.float64)
    weight = torch.randn(1, 2, h, w, generator=g, dtype=torch.float64)
    return CountingLinear(weight), x, (weight * x)[0]


def identity(output: Tensor) -> Tensor:
    return output


def patch_sums(relevance: Tensor, patch: int) -> np.ndarray:
    pixel = relevance.sum(0).numpy()
    h, w = pixel.shape
    return np.array([pixel[i : i + patch, j : j + patch].sum() for i in range(0, h, patch) for j in range(0, w, patch)])


def test_morf_curve_removes_the_largest_patch_sums_first() -> None:
    model, x, relevance = setup()
    result = region_perturbation(model, x, relevance, identity, patch=8, baseline="zero", batch_size=5)
    sums = patch_sums(relevance, 8)  # 3 x 4 patches, the edge ones smaller
    expected = float(model(x)) - np.r_[0.0, np.cumsum(np.sort(sums)[::-1])]
    np.testing.assert_allclose(result["curve"], expected, rtol=1e-10, atol=1e-10)
    assert result["steps"] == 12
    assert result["aopc"] == pytest.approx(np.mean(expected[0] - expected))
    assert result["removed_fraction"][0] == 0.0 and result["removed_fraction"][-1] == 1.0


def test_forward_passes_are_batched() -> None:
    model, x, relevance = setup()
    model.batches.clear()
    region_perturbation(model, x, relevance, identity, patch=4, steps=30, batch_size=8)
    assert model.batches == [8, 8, 8, 7]  # 31 images (k = 0..30) in ceil(31 / 8) passes
    one_by_one = region_perturbation(model, x, relevance, identity, patch=4, steps=30, batch_size=1)
    batched = region_perturbation(model, x, relevance, identity, patch=4, steps=30, batch_size=16)
    np.testing.assert_allclose(batched["curve"], one_by_one["curve"], rtol=1e-12)


def test_morf_beats_random_and_lerf() -> None:
    model, x, relevance = setup(32, 32)

    def aopc(order: str) -> float:
        return region_perturbation(model, x, relevance, identity, patch=4, order=order, baseline="zero")["aopc"]

    assert aopc("morf") > aopc("random") > aopc("lerf")


def test_mean_baseline_fills_each_channel_with_its_mean() -> None:
    model, x, relevance = setup()
    result = region_perturbation(model, x, relevance, identity, patch=4, steps=35, baseline="mean")
    filled = x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    assert result["curve"][-1] == pytest.approx(float(model(filled)), rel=1e-10)


def test_runs_on_a_unet_with_a_region_score() -> None:
    torch.manual_seed(0)
    model = UNet(UNetConfig(in_channels=1, num_classes=2, depth=2, base_width=4)).eval()
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        region = model(x).argmax(1) == 1

    def score(logits: Tensor) -> Tensor:
        return (logits[:, 1] * region).flatten(1).sum(1)

    relevance = torch.randn(32, 32)
    result = region_perturbation(model, x, relevance, score, patch=8, batch_size=4)
    assert len(result["curve"]) == 17 and np.isfinite(result["aopc"])
    with torch.no_grad():
        assert result["curve"][0] == pytest.approx(float(score(model(x))), rel=1e-5)


def test_bad_arguments_are_rejected() -> None:
    model, x, relevance = setup()
    with pytest.raises(ShapeMismatchError, match="one image"):
        region_perturbation(model, x.repeat(2, 1, 1, 1), relevance, identity)
    with pytest.raises(ShapeMismatchError, match="does not match"):
        region_perturbation(model, x, relevance[:, :5], identity)
    with pytest.raises(MetricInputError, match="steps"):
        region_perturbation(model, x, relevance, identity, patch=8, steps=13)
    with pytest.raises(MetricInputError, match="baseline"):
        region_perturbation(model, x, relevance, identity, baseline="blur")
    with pytest.raises(ShapeMismatchError, match="one score per image"):
        region_perturbation(model, x, relevance, lambda o: o.sum(), steps=3)
