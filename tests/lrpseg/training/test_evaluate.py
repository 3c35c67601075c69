from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    jaccard_score,
    precision_score,
    recall_score,
)

from lrpseg.data import Sample
from lrpseg.training import classification_metrics, segmentation_metrics
from lrpseg.training.evaluate import breakdown


def test_segmentation_metrics_match_sklearn() -> None:
    gen = torch.Generator().manual_seed(3)
    masks = torch.rand(6, 20, 20, generator=gen) < 0.1
    masks[0] = False
    pred = masks ^ (torch.rand(6, 20, 20, generator=gen) < 0.05)
    got = segmentation_metrics(pred, masks)
    y, p = masks.flatten().numpy(), pred.flatten().numpy()
    assert got["defect_iou"] == pytest.approx(jaccard_score(y, p), abs=1e-12)
    assert got["defect_precision"] == pytest.approx(precision_score(y, p), abs=1e-12)
    assert got["defect_recall"] == pytest.approx(recall_score(y, p), abs=1e-12)
    assert got["defect_dice"] == pytest.approx(f1_score(y, p), abs=1e-12)
    assert got["defect_pixel_share"] == pytest.approx(y.mean(), abs=1e-12)
    assert got["clean_image_false_alarm_rate"] == float(pred[0].any())


def test_false_alarms_count_defect_free_images_only() -> None:
    masks = torch.zeros(4, 5, 5, dtype=torch.bool)
    masks[0, 1, 1] = True
    pred = torch.zeros_like(masks)
    pred[0, 2, 2] = pred[1, 0, 0] = True  # image 0 is defective: not a false alarm
    assert segmentation_metrics(pred, masks)["clean_image_false_alarm_rate"] == pytest.approx(1 / 3)


def test_classification_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 50)
    pred = np.where(rng.random(50) < 0.2, 1 - labels, labels)
    got = classification_metrics(torch.from_numpy(pred), torch.from_numpy(labels))
    assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, pred), abs=1e-12)
    assert got["tpr"] == pytest.approx(recall_score(labels, pred, pos_label=1), abs=1e-12)
    assert got["tnr"] == pytest.approx(recall_score(labels, pred, pos_label=0), abs=1e-12)
    assert got["accuracy"] == pytest.approx(accuracy_score(labels, pred), abs=1e-12)


def sample(kind: str, distractors: tuple[str, ...] = (), mask_pixels: int = 0) -> Sample:
    mask = np.zeros((4, 4), bool)
    mask.flat[:mask_pixels] = True
    return Sample(np.zeros((4, 4), np.float32), mask, int(kind != "none"), kind, distractors=distractors)


def test_breakdown_counts_detections_per_kind_and_false_alarms_per_distractor() -> None:
    samples = [
        sample("crack", mask_pixels=4),
        sample("crack", ("stain",), mask_pixels=2),
        sample("blowhole", mask_pixels=1),
        sample("none"),
        sample("none", ("stain", "edge")),
        sample("none", ("edge",)),
    ]
    pred = torch.zeros(6, 4, 4, dtype=torch.long)
    pred[0].view(-1)[:2] = 1  # half of crack 0
    pred[4, 3, 3] = 1  # false alarm on the stain+edge image
    rows = breakdown("segmenter", pred, samples)
    assert rows["crack"] == {"images": 2, "detected": 0.5, "defect_iou": pytest.approx(2 / 6, abs=1e-4),
                             "defect_recall": pytest.approx(2 / 6, abs=1e-4)}  # fmt: skip
    assert rows["blowhole"]["detected"] == 0.0 and rows["blowhole"]["defect_recall"] == 0.0
    assert rows["defect-free, none"] == {"images": 1, "false_alarm_rate": 0.0}
    assert rows["defect-free, stain"] == {"images": 1, "false_alarm_rate": 1.0}
    assert rows["defect-free, edge"] == {"images": 2, "false_alarm_rate": 0.5}
    assert rows["defect-free, deposit"] == {"images": 0, "false_alarm_rate": 0.0}
    image_level = breakdown("classifier", torch.tensor([1, 0, 1, 0, 0, 1]), samples)
    assert image_level["crack"] == {"images": 2, "detected": 0.5}
    assert image_level["defect-free, edge"]["false_alarm_rate"] == 0.5
