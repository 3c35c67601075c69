"""The shipped models load and reach the metrics their cards state."""

from __future__ import annotations

import json

import pytest
import torch

from lrpseg.data import DefectDatasetConfig, generate_split
from lrpseg.registry import SHIPPED_DIR, Registry
from lrpseg.training.evaluate import card_report

SHIPPED = [
    "unet-defects@1",
    "vgg11-128n-defects@1",
    "vgg11-128n-defects@2",
    "vgg11-onefc-defects@1",
    "vgg11-onefc-defects@2",
]
CLASSIFIERS = [m for m in SHIPPED if m.startswith("vgg11")]
# The 192-px heads' cards are measured on 1000 images at 192 px: ~10 s each on one core.
CARD_CHECKS = [pytest.param(m, marks=pytest.mark.slow) if m.endswith("@2") else m for m in SHIPPED]
# Same data, same weights: only float summation order (threads, CPU type) can move a few pixels.
TOLERANCE = 0.005


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry([SHIPPED_DIR])


def test_the_models_are_shipped_small_and_documented(registry: Registry) -> None:
    assert registry.ids() == sorted(SHIPPED) and registry.errors == []
    size = sum(p.stat().st_size for p in SHIPPED_DIR.rglob("*") if p.is_file())
    assert size < 6 * 2**20  # 5.5 MiB with the 192-px heads (the 128N head's first FC layer is 1.2 MB)
    for model_id in SHIPPED:
        info = registry.get(model_id)
        card = (info.path / "card.md").read_text()
        for name, value in info.card.items():
            assert f"| {name} | {value:.4f} " in card


@pytest.mark.parametrize("model_id", CARD_CHECKS)
def test_shipped_model_reaches_its_card_metrics(registry: Registry, model_id: str) -> None:
    info = registry.get(model_id)
    evaluation = info.evaluation
    assert evaluation["split"] == "test" and evaluation["n"] >= 200
    data = DefectDatasetConfig.from_dict(evaluation["data"])
    samples = generate_split("test", evaluation["n"], data, start=evaluation["start"])
    metrics, errors = card_report(registry.load(model_id), info.kind, samples, info.mean[0], info.std[0])
    assert set(metrics) == set(info.card)
    for name, stated in info.card.items():
        assert metrics[name] == pytest.approx(stated, abs=TOLERANCE), name
    stated_errors = json.loads((info.path / "config.json").read_text())["breakdown"]
    assert set(errors) == set(stated_errors)
    for subset, row in stated_errors.items():
        assert errors[subset] == pytest.approx(row, abs=TOLERANCE), subset


def test_shipped_models_are_useful(registry: Registry) -> None:
    unet = registry.get("unet-defects@1").card
    assert unet["defect_iou"] > 0.5 and unet["defect_precision"] > 0.6 and unet["defect_recall"] > 0.6
    for model_id in CLASSIFIERS:
        card = registry.get(model_id).card
        assert card["balanced_accuracy"] > 0.9 and min(card["tpr"], card["tnr"]) > 0.85


def test_segmenter_handles_sizes_that_are_not_multiples_of_16(registry: Registry) -> None:
    info = registry.get("unet-defects@1")
    with torch.no_grad():
        out = registry.load(info.id)(info.normalize(torch.rand(1, 1, 50, 70)))
    assert out.shape == (1, 2, 50, 70)
