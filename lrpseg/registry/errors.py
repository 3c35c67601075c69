"""The one exception the registry raises."""

from __future__ import annotations


class RegistryError(ValueError):
    """An unknown model reference, or a model directory that cannot be used.

    The message names the model directory (or the reference) and what is wrong.
    """
