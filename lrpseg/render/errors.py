"""Errors raised by the renderers."""

from __future__ import annotations


class RenderInputError(ValueError):
    """An array or setting given to a renderer cannot be drawn as asked."""
