"""Stacking samples into tensors for training and evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from lrpseg.data.sample import Sample


def stack_samples(samples: Sequence[Sample]) -> tuple[Tensor, Tensor, Tensor]:
    """images (N, 1, H, W) float32 in [0, 1], masks (N, H, W) int64, labels (N,) int64."""
    if not samples:
        raise ValueError("no samples to stack")
    images = torch.from_numpy(np.stack([s.image for s in samples]))[:, None]
    masks = torch.from_numpy(np.stack([s.mask for s in samples])).long()
    labels = torch.tensor([s.label for s in samples], dtype=torch.long)
    return images, masks, labels
