"""Segmentation loss for rare defect pixels: class-weighted cross-entropy + soft Dice."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def soft_dice_loss(logits: Tensor, masks: Tensor, cls: int = 1, eps: float = 1.0) -> Tensor:
    """1 - Dice of class `cls` over the whole batch (so defect-free images do not divide by zero)."""
    prob = logits.softmax(dim=1)[:, cls]
    target = (masks == cls).to(prob.dtype)
    inter = (prob * target).sum()
    return 1.0 - (2.0 * inter + eps) / (prob.sum() + target.sum() + eps)


def segmentation_loss(logits: Tensor, masks: Tensor, defect_weight: float = 5.0) -> Tensor:
    """logits (N, 2, H, W), masks (N, H, W) int64 in {0, 1}."""
    weight = torch.tensor([1.0, defect_weight], dtype=logits.dtype, device=logits.device)
    return F.cross_entropy(logits, masks, weight=weight) + soft_dice_loss(logits, masks)
