"""lrpseg.heap on this machine's glibc: the mmap threshold pinned or fitted to a job, the heap trimmed,
PyTorch's huge pages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lrpseg.heap import HUGE_PAGES_ENV

LIBC = """
import ctypes
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.malloc.argtypes = [ctypes.c_size_t]
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * 4096
"""

CHILD = (
    LIBC
    + """
from lrpseg.heap import pin_mmap_threshold, release_heap
pinned = pin_mmap_threshold() if PIN else False
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
)


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


FIT_CHILD = (
    LIBC
    + """
import resource
from lrpseg.heap import REUSE_PIXELS, fit_heap
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def job():  # a step's tensors: 8 MiB blocks written, then freed
    blocks = [libc.malloc(8 << 20) for _ in range(4)]
    for b in blocks:
        ctypes.memset(b, 1, 8 << 20)
    for b in blocks:
        libc.free(b)
base = rss()
reused = fit_heap(REUSE_PIXELS)
job()
kept = rss() - base
before = faults()
job()
again = faults() - before
released = fit_heap(REUSE_PIXELS + 1)
print(reused, kept >> 20, again, released, (rss() - base) >> 20)
"""
)


def test_fit_heap_keeps_a_small_jobs_memory_for_the_next_and_releases_it_for_a_large_one() -> None:
    out = subprocess.run([sys.executable, "-c", FIT_CHILD], capture_output=True, text=True, check=True)
    reused, kept, again, released, left = out.stdout.split()
    assert reused == "True" and int(kept) >= 24  # freed blocks stayed in the heap (MiB)
    assert int(again) < 100  # the second job touched them without page faults (8 MiB = 2048 pages)
    assert released == "False" and int(left) < 8  # a large job hands them back first


HUGE_CHILD = """
import resource
from lrpseg.heap import use_huge_pages
use_huge_pages()
import torch
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
big = torch.ones(64 << 20, dtype=torch.uint8)  # 64 MiB touched: 16384 small pages
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(big.data_ptr() % 4096 == 0, faults)  # PyTorch's huge-page path page-aligns (madvise); else 64 B past a page
"""
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def test_use_huge_pages_gives_large_tensors_pytorchs_huge_page_path_unless_told_not_to() -> None:
    def run(env_value: str | None) -> tuple[str, int]:
        env = {k: v for k, v in os.environ.items() if k != HUGE_PAGES_ENV}
        if env_value is not None:
            env[HUGE_PAGES_ENV] = env_value
        out = subprocess.run([sys.executable, "-c", HUGE_CHILD], env=env, capture_output=True, text=True, check=True)
        path, faults = out.stdout.split()
        return path, int(faults)

    (on, on_faults), (off, off_faults) = run(None), run("0")  # "0": the operator's choice stands
    assert (on, off) == ("True", "False")
    assert off_faults > 16000
    if THP_MODE.exists() and "[never]" not in THP_MODE.read_text():
        assert on_faults < 4000  # 2 MiB pages: 512 small ones a fault
