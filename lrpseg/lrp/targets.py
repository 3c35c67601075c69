"""What to explain: the initial relevance r_out = logits x mask (whole output, one pass)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Target = Literal["class", "region", "region-normalized", "all"]


def predicted_class_mask(logits: Tensor, cls: int | None) -> Tensor:
    """Segmenter: the pixels predicted as `cls`, on channel `cls`. Classifier: the
    one-hot of `cls` (or of each sample's predicted class when `cls` is None)."""
    k = logits.shape[1]
    if cls is None:
        if logits.dim() != 2:
            raise ValueError("a segmentation target needs a class index (cls)")
        return F.one_hot(logits.argmax(1), k).to(logits)
    if not 0 <= cls < k:
        raise ValueError(f"class {cls} out of range: the model has {k} classes (0..{k - 1})")
    mask = torch.zeros_like(logits)
    mask[:, cls] = (logits.argmax(1) == cls).to(logits) if logits.dim() > 2 else 1.0
    return mask


def region_mask(logits: Tensor, cls: int, region: Tensor) -> Tensor:
    """A caller-given region (H, W) or (N, H, W) of class `cls`, predicted or not (seed 003's A)."""
    if logits.dim() != 4:
        raise ValueError("a region target needs a segmentation model (N, K, H, W) output")
    n, k, h, w = logits.shape
    if not 0 <= cls < k:
        raise ValueError(f"class {cls} out of range: the model has {k} classes (0..{k - 1})")
    region = region.to(device=logits.device, dtype=logits.dtype)
    if region.shape[-2:] != (h, w):
        raise ValueError(f"region has size {tuple(region.shape[-2:])}, the output is {(h, w)}")
    mask = torch.zeros_like(logits)
    mask[:, cls] = region.expand(n, h, w) != 0
    return mask


def all_classes_mask(logits: Tensor) -> Tensor:
    """Every pixel on the channel of its predicted class."""
    return F.one_hot(logits.argmax(1), logits.shape[1]).movedim(-1, 1).to(logits)
