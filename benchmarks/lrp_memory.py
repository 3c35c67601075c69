"""Memory of one LRP explanation, step by step, and what the row windows cost and save.

    .venv/bin/python benchmarks/lrp_memory.py --size 2048 [--composite conserving-reference] [--whole]
    .venv/bin/python benchmarks/lrp_memory.py --size 2048 --compare --repeats 3

Shipped default model (registry), float32, CPU. Prints, in bytes per input pixel over the
warmed-up baseline: the recorded values (and max-pool indices) kept at the end of the forward
pass, then per backward step (whole-image steps) or per windowed segment (lrpseg.lrp.strips)
the tensors still kept and the peak RSS while it ran (a thread samples /proc/self/statm),
and the process's overall peak. --whole turns the windows off. With --mmap-threshold, glibc's
mmap threshold is fixed first (mallopt) so freed tensors leave RSS at once.

--compare runs the explanation alternately whole and windowed, each in a fresh process
(`--repeats` times each), and prints each mode's median time and peak and their ratios.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from lrpseg import lrp
from lrpseg.lrp import engine
from lrpseg.registry import default_registry

M_MMAP_THRESHOLD = -3
WHOLE = 1 << 62  # window pixels no image reaches


def rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096


def kept_bytes(env: dict[Any, Any]) -> int:
    return sum(v.numel() * v.element_size() for v in env.values() if isinstance(v, torch.Tensor) and v.dim() >= 3)


def trace(pixels: int, base: int, peak: list[int]) -> None:
    """Print each whole-image step and each windowed segment as the sweep reaches it."""
    step, segment, forward_lean = (
        engine.PreparedModel._step,
        engine.PreparedModel._backward_segment,
        engine.PreparedModel.forward_lean,
    )

    def traced_step(self: engine.PreparedModel, info: Any, env: Any, r: Any, rules: Any, acc: Any) -> Any:
        if not isinstance(env, engine.Env):
            return step(self, info, env, r, rules, acc)  # one window's step: counted in its segment
        peak[0] = 0
        out = step(self, info, env, r, rules, acc)
        print(f"{info.name:<24} {info.kind.value:<9} kept {kept_bytes(env) / pixels:6.0f}  step peak "
              f"{(peak[0] - base) / pixels:6.0f} B/px")  # fmt: skip
        return out

    def traced_segment(self: engine.PreparedModel, node: Any, env: Any, rel: Any, rules: Any, strips: Any) -> None:
        first = node is strips.member[node].nodes[-1]
        peak[0] = 0 if first else peak[0]
        segment(self, node, env, rel, rules, strips)
        if first:
            names = strips.member[node].nodes
            print(f"{'windows ' + names[-1].name + '..' + names[0].name:<34} kept {kept_bytes(env) / pixels:6.0f}  "
                  f"segment peak {(peak[0] - base) / pixels:6.0f} B/px")  # fmt: skip

    def traced_forward(self: engine.PreparedModel, x: torch.Tensor, keep: Any, strips: Any = None) -> Any:
        env, out = forward_lean(self, x, keep, strips)
        indices = sum(v.numel() * v.element_size() for v in getattr(env, "indices", {}).values())
        print(f"end of forward: kept {kept_bytes(env) / pixels:.0f} B/px + max-pool indices {indices / pixels:.0f} "
              f"B/px, RSS {(rss() - base) / pixels:.0f} B/px")  # fmt: skip
        return env, out

    engine.PreparedModel._step = traced_step  # type: ignore[method-assign, assignment]
    engine.PreparedModel._backward_segment = traced_segment  # type: ignore[method-assign]
    engine.PreparedModel.forward_lean = traced_forward  # type: ignore[method-assign]


def explain_once(args: argparse.Namespace, quiet: bool) -> dict[str, float]:
    """One explanation at --size: its time and peak RSS growth per pixel (with --quiet, nothing printed)."""
    if args.mmap_threshold:
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, args.mmap_threshold)
    torch.set_num_threads(args.threads)
    registry = default_registry()
    info = registry.get(None)
    model = registry.load(info.id)
    pixels = args.size * args.size
    x = torch.rand(1, info.in_channels, args.size, args.size, generator=torch.Generator().manual_seed(0))
    lrp.propagate(model, x[..., :64, :64], lambda o: o, rules=args.composite, bounds=(-2.0, 2.0))  # warm up
    if args.whole:
        lrp.prepare(model, x).window_pixels = WHOLE
    base = rss()
    peak = [0]

    def sample() -> None:
        while True:
            peak[0] = max(peak[0], rss())
            time.sleep(0.0002)

    threading.Thread(target=sample, daemon=True).start()
    if not quiet:
        trace(pixels, base, peak)
    start = time.perf_counter()
    lrp.propagate(model, x, lambda o: o, rules=args.composite, bounds=(-2.0, 2.0))
    seconds = time.perf_counter() - start
    overall = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"seconds": seconds, "bytes_per_pixel": overall / pixels}


def compare(args: argparse.Namespace) -> None:
    """Whole and windowed, alternately, each in a fresh process."""
    rows: dict[str, list[dict[str, float]]] = {"whole": [], "windows": []}
    command = [sys.executable, __file__, "--size", str(args.size), "--composite", args.composite]
    command += ["--threads", str(args.threads), "--json"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for _ in range(args.repeats):
        for mode in rows:
            out = subprocess.run([*command, *(["--whole"] if mode == "whole" else [])], env=env, capture_output=True)
            rows[mode].append(json.loads(out.stdout.decode().strip().splitlines()[-1]))
    median = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in rows.items()}
    for mode, m in median.items():
        print(f"{mode:<8} {args.size}²  {m['seconds']:7.2f} s  peak {m['bytes_per_pixel']:5.0f} B/px  "
              f"(median of {args.repeats}; times {[round(r['seconds'], 2) for r in rows[mode]]})")  # fmt: skip
    ratio = median["windows"]["seconds"] / median["whole"]["seconds"]
    memory = median["windows"]["bytes_per_pixel"] / median["whole"]["bytes_per_pixel"]
    print(f"windows / whole: time {ratio:.2f}x, peak {memory:.2f}x ({args.composite}, {args.threads} threads); "
          f"load average {[round(v, 2) for v in os.getloadavg()]}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--composite", default="conserving-reference")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mmap-threshold", type=int)
    parser.add_argument("--whole", action="store_true", help="no row windows: every value stored whole")
    parser.add_argument("--compare", action="store_true", help="whole vs windowed, time and peak")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compare:
        compare(args)
        return
    found = explain_once(args, quiet=args.json)
    if args.json:
        print(json.dumps(found))
        return
    mode = "whole" if args.whole else "windows"
    print(f"process peak over baseline: {found['bytes_per_pixel']:.0f} B/px, {found['seconds']:.2f} s "
          f"({args.size}², {args.composite}, {mode})")  # fmt: skip


if __name__ == "__main__":
    main()
