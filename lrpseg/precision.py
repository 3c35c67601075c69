"""Mixed precision: the forward pass and the LRP sweep in bfloat16 or float16 on a CUDA device.

The model is copied once per number format (the fp32 model stays as it is, shared by fp32 jobs)
and the whole sweep runs in that format, so every tensor of one pass has one dtype (autocast
would leave the engine's transposed convolutions with mixed inputs). Relevance, logits and
everything after them are float32 again. The error against fp32 is measured by
benchmarks/gpu.py (README). fp32 is the default; on a CPU only fp32 is served.
"""

from __future__ import annotations

import copy
import threading
import weakref

import torch
from torch import nn

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

_copies: weakref.WeakKeyDictionary[nn.Module, dict[torch.dtype, nn.Module]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


class PrecisionError(ValueError):
    """A number format this device does not serve."""


def check_precision(precision: str, device: torch.device) -> torch.dtype:
    """The dtype for `precision` on `device`; PrecisionError for bf16/fp16 off CUDA or an unknown name."""
    if precision not in DTYPES:
        raise PrecisionError(f"precision must be one of {sorted(DTYPES)}, got {precision!r}")
    if precision != "fp32" and device.type != "cuda":
        raise PrecisionError(
            f"precision {precision} runs on a CUDA worker only; this worker runs on {device.type} (use fp32)"
        )
    return DTYPES[precision]


def at_precision(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """`model` itself for float32, else its copy in `dtype` (made once per model and dtype)."""
    if dtype == torch.float32:
        return model
    with _lock:
        per_model = _copies.setdefault(model, {})
        if dtype not in per_model:
            per_model[dtype] = copy.deepcopy(model).to(dtype).eval()
        return per_model[dtype]
