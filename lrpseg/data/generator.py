"""Seeded samples and the 60/20/20 train/validation/test split by seed ranges.

A sample is a pure function of (seed, config): its label and defect kind, its
surface and its defects each come from their own child of `SeedSequence(seed)`,
so the defect-free surface of any sample can be regenerated on its own.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from lrpseg.data.config import DefectDatasetConfig
from lrpseg.data.defects import draw_defects
from lrpseg.data.sample import Sample
from lrpseg.data.surface import render_surface

Split = Literal["train", "val", "test"]

# Seeds 0 .. SEED_SPACE-1, cut 60/20/20 like seed 001's splits.
SEED_SPACE = 1_000_000
SPLIT_RANGES: dict[str, tuple[int, int]] = {
    "train": (0, 600_000),
    "val": (600_000, 800_000),
    "test": (800_000, 1_000_000),
}


class SplitError(ValueError):
    """An unknown split name or a request beyond a split's seed range."""


def streams(seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Independent generators for (label/kind, surface, defects)."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return tuple(np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))  # type: ignore[return-value]


def draw_label(rng: np.random.Generator, config: DefectDatasetConfig) -> tuple[int, str]:
    if rng.random() >= config.defect_rate:
        return 0, "none"
    return 1, "crack" if rng.random() < config.crack_share else "blowhole"


def generate_surface(seed: int, config: DefectDatasetConfig | None = None) -> np.ndarray:
    """The defect-free surface of sample `seed` (float32), before its defects are drawn."""
    config = config or DefectDatasetConfig()
    _, surface_rng, _ = streams(seed)
    surface, _ = render_surface(surface_rng, config)
    return surface.astype(np.float32)


def generate_sample(seed: int, config: DefectDatasetConfig | None = None) -> Sample:
    """Sample number `seed`; the same seed and config always give the same sample."""
    config = config or DefectDatasetConfig()
    label_rng, surface_rng, defect_rng = streams(seed)
    label, kind = draw_label(label_rng, config)
    surface, distractors = render_surface(surface_rng, config)
    if label:
        mask, factor = draw_defects(defect_rng, kind, config)
        image = surface * factor
    else:
        mask, image = np.zeros(surface.shape, bool), surface
    return Sample(
        image=image.astype(np.float32),
        mask=mask,
        label=label,
        kind=kind,
        seed=seed,
        distractors=distractors,
    )


def split_seeds(split: Split, n: int, start: int = 0) -> range:
    """Seeds of samples start .. start+n-1 of `split`."""
    if split not in SPLIT_RANGES:
        raise SplitError(f"unknown split {split!r}; expected one of {sorted(SPLIT_RANGES)}")
    low, high = SPLIT_RANGES[split]
    if n < 0 or start < 0 or low + start + n > high:
        raise SplitError(f"split {split!r} holds {high - low} samples; asked for {n} from index {start}")
    return range(low + start, low + start + n)


def split_of(seed: int) -> Split:
    """Which split a seed belongs to."""
    for name, (low, high) in SPLIT_RANGES.items():
        if low <= seed < high:
            return name  # type: ignore[return-value]
    raise SplitError(f"seed {seed} lies outside the seed space [0, {SEED_SPACE})")


def split_sizes(total: int) -> dict[str, int]:
    """60/20/20 sizes of a dataset of `total` samples (train takes the rounding)."""
    val = test = round(0.2 * total)
    return {"train": total - val - test, "val": val, "test": test}


def generate_split(split: Split, n: int, config: DefectDatasetConfig | None = None, start: int = 0) -> list[Sample]:
    """The first `n` samples (from index `start`) of a split; reproducible."""
    config = config or DefectDatasetConfig()
    return [generate_sample(seed, config) for seed in split_seeds(split, n, start)]
