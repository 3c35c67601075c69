"""Metrics: masks vs references, PR curves, explanation quality, classifier rates, faithfulness."""

from lrpseg.metrics.classification import classification_metrics
from lrpseg.metrics.errors import InvalidMaskError, InvalidScoreError, MetricInputError, ShapeMismatchError
from lrpseg.metrics.explanation import explanation_metrics
from lrpseg.metrics.faithfulness import deletion_insertion
from lrpseg.metrics.perturbation import region_perturbation
from lrpseg.metrics.segmentation import Confusion, PRCurve, confusion, pr_curve, segmentation_metrics

__all__ = [
    "Confusion",
    "InvalidMaskError",
    "InvalidScoreError",
    "MetricInputError",
    "PRCurve",
    "ShapeMismatchError",
    "classification_metrics",
    "confusion",
    "deletion_insertion",
    "explanation_metrics",
    "pr_curve",
    "region_perturbation",
    "segmentation_metrics",
]
