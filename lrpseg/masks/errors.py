"""Errors raised by the mask extractors."""

from __future__ import annotations


class InvalidRelevanceError(ValueError):
    """The relevance map is not a finite, real-valued 2-D array."""
