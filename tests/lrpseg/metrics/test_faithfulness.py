"""Deletion / insertion curves against a hand-computed 2x2 example and closed-form linear models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from lrpseg.metrics.errors import InvalidScoreError, MetricInputError, ShapeMismatchError
from lrpseg.metrics.faithfulness import auc, deletion_insertion, input_gradient, pixel_ranks, with_baselines


class Linear:
    """f(x) = Σ w x, counting the batch sizes it is called with."""

    def __init__(self, weight: Tensor) -> None:
        self.weight = weight
        self.batches: list[int] = []

    def __call__(self, x: Tensor) -> Tensor:
        self.batches.append(x.shape[0])
        return (x * self.weight).flatten(1).sum(1)


def identity(t: Tensor) -> Tensor:
    return t


def test_two_by_two_by_hand() -> None:
    """x = [[1, 2], [3, 4]], f = Σ x, order by R: (0,1), (1,0), (1,1), (0,0); fill 0; one pixel per step."""
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64)
    relevance = torch.tensor([[0.1, 0.4], [0.3, 0.2]], dtype=torch.float64)
    out = deletion_insertion(Linear(torch.ones_like(x)), x, relevance, identity, steps=4, baseline="zero")
    np.testing.assert_allclose(out["deletion"], [1.0, 0.8, 0.5, 0.1, 0.0], atol=1e-15)
    np.testing.assert_allclose(out["insertion"], [0.0, 0.2, 0.5, 0.9, 1.0], atol=1e-15)
    assert out["deletion_auc"] == pytest.approx(0.475)  # (0.9 + 0.65 + 0.3 + 0.05) / 4
    assert out["insertion_auc"] == pytest.approx(0.525)  # (0.1 + 0.35 + 0.7 + 0.95) / 4
    assert out["difference"] == pytest.approx(0.05)
    assert out["fractions"] == [0.0, 0.25, 0.5, 0.75, 1.0] and out["score"] == 10.0


def test_mean_fill_and_batching() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 2, 6, 5, generator=g, dtype=torch.float64)
    w = torch.randn(1, 2, 6, 5, generator=g, dtype=torch.float64)
    model = Linear(w)
    relevance = ((x - x.mean(dim=(2, 3), keepdim=True)) * w)[0]  # exact contributions against the mean fill
    out = deletion_insertion(model, x, relevance, identity, steps=10, batch_size=4)
    assert model.batches == [4, 4, 4, 4, 4, 2]  # 22 images
    pixel = relevance.sum(0).flatten()
    order = torch.sort(pixel, descending=True, stable=True).indices
    base = float(model(x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()))
    score = float(model(x))
    counts = [round(k * 30 / 10) for k in range(11)]
    expected_del = [(score - float(pixel[order[:c]].sum())) / score for c in counts]
    expected_ins = [(base + float(pixel[order[:c]].sum())) / score for c in counts]
    np.testing.assert_allclose(out["deletion"], expected_del, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out["insertion"], expected_ins, rtol=1e-10, atol=1e-12)
    assert out["difference"] > 0  # the exact contributions beat ...
    rand = deletion_insertion(model, x, relevance, identity, steps=10, order="random", seed=3)
    assert out["difference"] > rand["difference"]  # ... a random order


def test_random_order_is_seeded_and_ignores_relevance() -> None:
    ranks = pixel_ranks(torch.zeros(4, 5), "random", seed=7)
    assert sorted(ranks.flatten().tolist()) == list(range(20))
    assert torch.equal(ranks, pixel_ranks(torch.randn(4, 5), "random", seed=7))
    assert not torch.equal(ranks, pixel_ranks(torch.zeros(4, 5), "random", seed=8))


def test_gradient_baseline_of_a_linear_model_is_its_weight() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1, 4, 4, generator=g, dtype=torch.float64)
    w = torch.randn(1, 1, 4, 4, generator=g, dtype=torch.float64)
    assert torch.equal(input_gradient(Linear(w), x, identity), w)
    runs = with_baselines(Linear(w), x, (x * w)[0], identity, steps=4, baseline="zero")
    assert set(runs) == {"explanation", "random", "gradient"} and runs["random"]["order"] == "random"


def test_auc_of_a_line() -> None:
    assert auc([0.0, 0.5, 1.0]) == pytest.approx(0.5)


def test_bad_input() -> None:
    x = torch.ones(1, 1, 3, 3)
    with pytest.raises(ShapeMismatchError):
        deletion_insertion(Linear(x), x, torch.ones(2, 2), identity)
    with pytest.raises(MetricInputError):
        deletion_insertion(Linear(x), x, torch.ones(3, 3), identity, steps=0)
    with pytest.raises(InvalidScoreError, match="unperturbed"):
        deletion_insertion(Linear(torch.zeros_like(x)), x, torch.ones(3, 3), identity)
    with pytest.raises(InvalidScoreError, match="NaN"):
        deletion_insertion(Linear(x), x, torch.full((3, 3), float("nan")), identity)
