"""One generated image with its exact defect mask and image-level label."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class Sample:
    """image: float32 (H, W) in [0, 1]; mask: bool (H, W); label: 1 = defect present.

    kind is "crack", "blowhole" or "none"; distractors names what else was drawn
    (defect-free look-alikes: "stain", "deposit", "edge", "scratch").
    """

    image: np.ndarray
    mask: np.ndarray
    label: int
    kind: str
    seed: int = -1
    distractors: tuple[str, ...] = field(default_factory=tuple)
