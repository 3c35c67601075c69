"""glibc's heap, where a worker's large transient tensors come from (no-ops elsewhere).

glibc serves a freed block's size from the heap next time: its mmap threshold rises to the
largest block freed (up to 32 MiB), so after one large explanation every later tensor of a
few MiB lands on the heap, and freed, stays resident as holes that smaller steps only partly
reuse (~50-70 B/px at 2048², docs/lrp.md "Memory"). A fixed threshold keeps such tensors in
their own mappings, returned to the system when freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache
from typing import Any

M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
MMAP_THRESHOLD = 4 << 20  # bytes: blocks from 4 MiB get their own mapping


@lru_cache(maxsize=1)
def _libc() -> Any | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def pin_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold (which also stops it rising); True where it was set."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_MMAP_THRESHOLD, threshold) == 1)


def release_heap() -> None:
    """Hand the heap's free pages back to the system (glibc's malloc_trim)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
