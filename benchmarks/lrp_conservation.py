"""Conservation per model family: Σ input relevance / Σ r_out, and the share biases absorbed.

Usage: python benchmarks/lrp_conservation.py [--composites epsilon-plus-flat epsilon] [--threads 1]

The small random-initialised networks of tests/lrpseg/models/test_families.py (BatchNorm
statistics randomised), float64, target "all" (every pixel on its predicted class), mean
over 2 inputs. "z+ (bias-free)" gives z+ to every layer with all biases zeroed (BatchNorm
shifts and norm β included): what z+ itself loses (outputs with no positive contribution).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lrpseg import lrp
from tests.lrpseg.models.test_families import ARCHS, network


def bias_free(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model)
    with torch.no_grad():
        for m in model.modules():
            if getattr(m, "bias", None) is not None and isinstance(m.bias, torch.Tensor):
                m.bias.zero_()
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.zero_()
    return model


def measure(model: nn.Module, x: torch.Tensor, rules) -> tuple[float, float]:
    expl = lrp.explain(model, x, target="all", rules=rules, bounds=(-3.0, 3.0))
    return float(expl.conservation.mean()), float(expl.bias_share.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--composites", nargs="+", default=["epsilon-plus-flat", "epsilon"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'network':<24}" + "".join(f"{c + ' cons/bias':>30}" for c in args.composites) + f"{'z+ (bias-free)':>16}")
    for name in ARCHS:
        model, x = network(name)
        x = torch.cat([x, -x])
        cells = [measure(model, x, c) for c in args.composites]
        zplus, _ = measure(bias_free(model), x, {"*": lrp.ZPlus()})
        row = "".join(f"{c:>21.3f} / {b:>6.3f}" for c, b in cells)
        print(f"{name:<24}{row}{zplus:>16.3f}", flush=True)


if __name__ == "__main__":
    main()
