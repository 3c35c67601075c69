"""Errors raised by the LRP engine."""

from __future__ import annotations


class LRPError(ValueError):
    """Base class: the model or the request cannot be explained as asked."""


class UnsupportedOperationError(LRPError):
    """The traced graph contains an op the engine has no LRP rule for."""


class RuleError(LRPError):
    """A rule was mapped to a layer it cannot handle, or a rule map names unknown modules."""


class TraceError(UnsupportedOperationError):
    """torch.fx could not trace the model faithfully (then it is exported with torch.export)."""
