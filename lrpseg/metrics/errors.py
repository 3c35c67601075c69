"""Errors raised by the metrics."""

from __future__ import annotations


class MetricInputError(ValueError):
    """Base class: the arrays given to a metric cannot be compared."""


class ShapeMismatchError(MetricInputError):
    """Two arrays that must cover the same pixels (or samples) differ in shape."""


class InvalidMaskError(MetricInputError):
    """A mask or label array holds values other than 0/1 (False/True), or is empty."""


class InvalidScoreError(MetricInputError):
    """A score or relevance array holds NaN or infinite values."""
