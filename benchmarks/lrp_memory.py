"""Memory of one LRP explanation, step by step: what the forward keeps and each sweep step's peak.

    .venv/bin/python benchmarks/lrp_memory.py --size 1024 [--composite conserving] [--mmap-threshold 1048576]

Shipped default model (registry), float32, CPU. Prints, in bytes per input pixel over the
warmed-up baseline: the recorded values (and max-pool indices) kept at the end of the forward
pass, then per backward step the tensors still kept and the peak RSS while the step ran (a
thread samples /proc/self/statm), and the process's overall peak. With --mmap-threshold, glibc's
mmap threshold is fixed first (mallopt) so freed tensors leave RSS at once.
"""

from __future__ import annotations

import argparse
import ctypes
import resource
import threading
import time
from pathlib import Path
from typing import Any

import torch

from lrpseg import lrp
from lrpseg.lrp import engine
from lrpseg.registry import default_registry

M_MMAP_THRESHOLD = -3


def rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096


def kept_bytes(env: dict[Any, Any]) -> int:
    return sum(v.numel() * v.element_size() for v in env.values() if isinstance(v, torch.Tensor) and v.dim() >= 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--composite", default="conserving")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mmap-threshold", type=int)
    args = parser.parse_args()
    if args.mmap_threshold:
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, args.mmap_threshold)
    torch.set_num_threads(args.threads)
    registry = default_registry()
    info = registry.get(None)
    model = registry.load(info.id)
    pixels = args.size * args.size
    x = torch.rand(1, info.in_channels, args.size, args.size)
    lrp.propagate(model, x[..., :64, :64], lambda o: o, rules=args.composite, bounds=(-2.0, 2.0))  # warm up
    base = rss()
    peak = [0]

    def sample() -> None:
        while True:
            peak[0] = max(peak[0], rss())
            time.sleep(0.0002)

    threading.Thread(target=sample, daemon=True).start()
    step, forward_lean = engine.PreparedModel._step, engine.PreparedModel.forward_lean

    def traced_step(self: engine.PreparedModel, info: Any, env: Any, r: Any, rules: Any, acc: Any) -> Any:
        peak[0] = 0
        out = step(self, info, env, r, rules, acc)
        print(f"{info.name:<24} {info.kind.value:<9} kept {kept_bytes(env) / pixels:6.0f}  step peak "
              f"{(peak[0] - base) / pixels:6.0f} B/px")  # fmt: skip
        return out

    def traced_forward(self: engine.PreparedModel, x: torch.Tensor, keep: Any) -> Any:
        env, out = forward_lean(self, x, keep)
        indices = sum(v.numel() * v.element_size() for v in env.indices.values())
        print(f"end of forward: kept {kept_bytes(env) / pixels:.0f} B/px + max-pool indices {indices / pixels:.0f} "
              f"B/px, RSS {(rss() - base) / pixels:.0f} B/px")  # fmt: skip
        return env, out

    engine.PreparedModel._step = traced_step  # type: ignore[method-assign, assignment]
    engine.PreparedModel.forward_lean = traced_forward  # type: ignore[method-assign, assignment]
    lrp.propagate(model, x, lambda o: o, rules=args.composite, bounds=(-2.0, 2.0))
    overall = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    print(f"process peak over baseline: {overall / pixels:.0f} B/px ({args.size}², {args.composite})")


if __name__ == "__main__":
    main()
