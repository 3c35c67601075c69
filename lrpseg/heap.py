"""glibc's heap, where a worker's large transient tensors come from (no-ops elsewhere).

glibc serves a freed block's size from the heap next time: its mmap threshold rises to the
largest block freed (up to 32 MiB), so after one large explanation every later tensor of a
few MiB lands on the heap, and freed, stays resident as holes that smaller steps only partly
reuse (~50-70 B/px at 2048², docs/lrp.md "Memory"). A fixed threshold keeps such tensors in
their own mappings, returned to the system when freed.

Returned memory costs a page fault (~2.5 µs) per 4 KiB when it is touched again, and a small
job touches its tensors' memory afresh at every step: at 512², a job in its own mappings took
~150 000 faults and twice the time (534 against 274 ms). `fit_heap` therefore picks per job:
jobs of at most REUSE_PIXELS keep their freed blocks in the heap for the next step and the
next job (a few hundred MiB at most), larger ones get their own mappings, as above.

Those mappings still fault once per page touched. `use_huge_pages` has PyTorch back CPU tensors
from 2 MiB with transparent huge pages, 512 pages a fault: a 2048² job took 8.9 s where it took
15.5 s (5.5 M faults -> 1.0 M), at the same peak (183 B/px); small jobs' heaps round up (512²:
855 -> 970-995 B/px of fixed buffers).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import lru_cache
from typing import Any

M_TRIM_THRESHOLD = -1  # mallopt's parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20  # bytes: blocks from 4 MiB get their own mapping
TRIM_THRESHOLD = 128 << 10  # glibc's default: free memory above the heap's top goes back from 128 KiB
REUSE_PIXELS = 512 * 512  # jobs up to this many pixels (all images of a pass) reuse the heap
REUSE_MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts (64-bit): every block of such a job
REUSE_TRIM_THRESHOLD = 128 << 20  # freed memory kept at the heap's top for the next job
HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"  # PyTorch's switch, read at its first CPU allocation


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


def set_heap(mmap_threshold: int, trim_threshold: int) -> bool:
    """Set glibc's mmap and trim thresholds (fixed from then on); True where both were set."""
    libc = _libc()
    if libc is None:
        return False
    return bool(
        libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 and libc.mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1
    )


def fit_heap(pixels: int) -> bool:
    """The heap for a job of `pixels` (module docstring): reused up to REUSE_PIXELS, else blocks
    from 4 MiB in their own mappings and the heap trimmed (what earlier small jobs left goes
    back). Returns whether the job reuses the heap."""
    reuse = pixels <= REUSE_PIXELS
    if reuse:
        set_heap(REUSE_MMAP_THRESHOLD, REUSE_TRIM_THRESHOLD)
    else:
        set_heap(MMAP_THRESHOLD, TRIM_THRESHOLD)
        release_heap()
    return reuse


def use_huge_pages() -> None:
    """Have PyTorch put CPU tensors from 2 MiB on transparent huge pages (madvise; Linux), unless
    the environment sets THP_MEM_ALLOC_ENABLE already (0 turns it off). Call before torch allocates:
    PyTorch reads the switch once."""
    os.environ.setdefault(HUGE_PAGES_ENV, "1")


def release_heap() -> None:
    """Hand the heap's free pages back to the system (glibc's malloc_trim)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
