"""Training the shipped models on generated data (`lrpseg train`)."""

from __future__ import annotations

from lrpseg.training.card import render_card
from lrpseg.training.evaluate import classification_metrics, evaluate, evaluation_set, segmentation_metrics
from lrpseg.training.presets import NORM_MEAN, NORM_STD, PRESETS, Preset
from lrpseg.training.trainer import TrainingError, TrainOptions, TrainResult, train

__all__ = [
    "NORM_MEAN",
    "NORM_STD",
    "PRESETS",
    "Preset",
    "TrainOptions",
    "TrainResult",
    "TrainingError",
    "classification_metrics",
    "evaluate",
    "evaluation_set",
    "render_card",
    "segmentation_metrics",
    "train",
]
