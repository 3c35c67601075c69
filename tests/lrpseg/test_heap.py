"""lrpseg.heap on this machine's glibc: the mmap threshold is pinned, the heap trimmed."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import ctypes
from lrpseg.heap import pin_mmap_threshold, release_heap
pinned = pin_mmap_threshold() if PIN else False
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.malloc.argtypes = [ctypes.c_size_t]
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * 4096
# one 16 MiB block freed raises glibc's dynamic threshold; later 8 MiB blocks then come from the heap
first = libc.malloc(16 << 20)
ctypes.memset(first, 1, 16 << 20)
libc.free(first)
base = rss()
blocks, keep = [], []
for _ in range(8):  # each with a live block above it: its pages can't go back by lowering the heap's top
    blocks.append(libc.malloc(8 << 20))
    ctypes.memset(blocks[-1], 1, 8 << 20)
    keep.append(libc.malloc(100 << 10))
for b in blocks:
    libc.free(b)
if TRIM:
    release_heap()
print(pinned, (rss() - base) >> 20)
"""


def _run(pin: bool, trim: bool = False) -> tuple[str, int]:
    code = f"PIN = {pin}\nTRIM = {trim}\n" + CHILD
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    pinned, grown = out.stdout.split()
    return pinned, int(grown)


def test_a_pinned_threshold_returns_freed_blocks_to_the_system() -> None:
    assert _run(False)[1] >= 32  # unpinned: the freed 8 MiB heap blocks stay resident (MiB)
    pinned, grown = _run(True)
    assert pinned == "True" and grown < 8


def test_release_heap_hands_freed_heap_pages_back() -> None:
    assert _run(False, trim=True)[1] < 8
