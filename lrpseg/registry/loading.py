"""Turning a checked model directory into a ready module (eval mode, float32).

Weights come from safetensors (plain tensors, no code) or from a vetted .pt2
archive; `torch.load` is never called on the model files.
"""

from __future__ import annotations

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from lrpseg.lrp.graph import output_source
from lrpseg.models import build_model
from lrpseg.models.families import FAMILIES as LIBRARY_FAMILIES
from lrpseg.models.families import FamilyError, Logits
from lrpseg.registry.model_info import ModelInfo, fail
from lrpseg.registry.pt2 import load_exported

PROBE_SIZE = 64  # input side for the load-time forward check when any size is accepted
PROBE_SIZE_3D = 32  # volume models (32**3 voxels: deep MONAI nets halve it 4 times)


def read_safetensors(info: ModelInfo) -> dict[str, Tensor]:
    path = info.path / info.weights_file
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise fail(info.path, f"cannot read {info.weights_file}: {exc}") from None


def describe_mismatch(expected: dict[str, Tensor], found: dict[str, Tensor]) -> str:
    """Which tensors are missing, unexpected or of the wrong shape (first few of each)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [
        f"{k}: file {tuple(found[k].shape)}, architecture {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(found))
        if found[k].shape != expected[k].shape
    ]
    parts = [
        f"{label} {items[:4]}{' ...' if len(items) > 4 else ''}"
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes))
        if items
    ]
    return "; ".join(parts)


def load_family_model(info: ModelInfo) -> nn.Module:
    try:
        model = build_model(info.architecture)
    except FamilyError as exc:
        raise fail(info.path, str(exc)) from None
    state = read_safetensors(info)
    problem = describe_mismatch(model.state_dict(), state)
    if problem:
        raise fail(info.path, f"{info.weights_file} does not match the {info.family} architecture: {problem}")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise fail(info.path, f"{info.weights_file} holds non-finite values in {bad[:4]}")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    if info.family in LIBRARY_FAMILIES:
        model = Logits(model)  # one logits tensor, whatever the library returns
    return model.eval()


def probe(info: ModelInfo, model: nn.Module, device: torch.device) -> None:
    """One forward pass on a small input: the output must have the declared shape."""
    side = info.input_size or (PROBE_SIZE_3D if info.spatial_dims == 3 else PROBE_SIZE)
    x = torch.zeros(1, info.in_channels, *(side,) * info.spatial_dims, device=device)
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:
        raise fail(info.path, f"forward pass on a {tuple(x.shape)} input failed: {type(exc).__name__}: {exc}") from None
    expected = (1, info.num_classes, *x.shape[2:]) if info.kind == "segmenter" else (1, info.num_classes)
    out = output_source(out)
    shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
    if shape != expected:
        raise fail(
            info.path, f"a {info.kind} must return logits of shape {expected} for a {tuple(x.shape)} input, got {shape}"
        )


def load_model(info: ModelInfo, device: str | torch.device = "cpu") -> nn.Module:
    """Build, fill, check and move the model described by `info`."""
    device = torch.device(device)
    if info.family == "exported":
        model = load_exported(info.path / info.weights_file)
    else:
        model = load_family_model(info)
    model = model.to(device=device, dtype=torch.float32)
    for param in model.parameters():
        param.requires_grad_(False)
    probe(info, model, device)
    return model
