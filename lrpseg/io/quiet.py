"""Keep pydicom/highdicom chatter (which can quote attribute values) out of logs.

pydicom reports invalid values with ``warn_and_log``: a log record on the "pydicom"
logger plus a ``warnings.warn`` whose text quotes the value, e.g. a malformed birth
date. Inside :func:`quiet` both are swallowed: log records by a filter keyed on a
context variable (thread- and task-safe), warnings by ``catch_warnings`` under a lock,
because ``catch_warnings`` swaps process-global state and two overlapping uses from
different threads could otherwise leave warnings silenced for good.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["quiet"]

_QUIET: ContextVar[bool] = ContextVar("lrpseg_io_quiet", default=False)
_WARNINGS_LOCK = threading.RLock()
_LOGGERS = ("pydicom", "highdicom")


class _DropWhileQuiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _QUIET.get()


_FILTER = _DropWhileQuiet()


def _attach_filters() -> None:
    """Filter the libraries' loggers and their children (filters don't inherit)."""
    names = [n for n in list(logging.root.manager.loggerDict) if n.split(".")[0] in _LOGGERS]
    for name in {*_LOGGERS, *names}:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


@contextmanager
def quiet() -> Iterator[list[warnings.WarningMessage]]:
    """Silence pydicom/highdicom logs and warnings; yield the warnings caught."""
    _attach_filters()
    token = _QUIET.set(True)
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    finally:
        _QUIET.reset(token)
