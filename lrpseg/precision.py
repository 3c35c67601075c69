"""Mixed precision: the forward pass in bfloat16 or float16 on a CUDA device, the LRP sweep in float32.

The forward runs under torch.autocast (the model's convolutions and matrix products in the low
format, the rest as autocast decides); its records are then widened to float32 and the sweep
runs on them with the model's float32 weights. The sweep stays float32 because its steps divide
by small denominators and subtract large terms: run in bf16/fp16 it lost the map (measured on
the shipped U-Net with `conserving-reference`: relevance sums 12-56x fp32's in bf16, NaN in fp16;
the alpha-beta step after the first layer, which subtracts large terms, took 163 in to 15 010 out).
The error against fp32 is measured by benchmarks/gpu.py (README). fp32 is the default; on a
CPU only fp32 is served (check_precision), though the engine runs bf16 there too (tests).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
LOW = (torch.bfloat16, torch.float16)


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


def forward_precision(device: torch.device, dtype: torch.dtype) -> AbstractContextManager[object]:
    """The context a forward pass in `dtype` runs in: torch.autocast for bf16/fp16, nothing for fp32."""
    if dtype == torch.float32:
        return nullcontext()
    if dtype not in LOW:
        raise PrecisionError(f"precision must be float32, bfloat16 or float16, got {dtype}")
    return torch.autocast(device.type, dtype=dtype)


def widened_logits(logits: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The logits of a forward pass in `dtype` as float32; PrecisionError where a low format overflowed."""
    if dtype != torch.float32 and not bool(torch.isfinite(logits).all()):
        name = str(dtype).removeprefix("torch.")
        raise PrecisionError(
            f"the forward pass overflowed in {name} on this input (non-finite logits); use bf16 or fp32"
        )
    return logits.float()


def widen(value: object) -> object:
    """A bf16/fp16 tensor as float32; anything else as it is."""
    if isinstance(value, torch.Tensor) and value.dtype in LOW:
        return value.float()
    return value
