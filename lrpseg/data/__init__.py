"""Procedurally generated surface-defect images with exact masks and labels."""

from __future__ import annotations

from lrpseg.data.config import DatasetConfigError, DefectDatasetConfig
from lrpseg.data.generator import (
    SPLIT_RANGES,
    SplitError,
    generate_sample,
    generate_split,
    generate_surface,
    split_of,
    split_seeds,
    split_sizes,
)
from lrpseg.data.sample import Sample
from lrpseg.data.tensors import stack_samples

__all__ = [
    "SPLIT_RANGES",
    "DatasetConfigError",
    "DefectDatasetConfig",
    "Sample",
    "SplitError",
    "generate_sample",
    "generate_split",
    "generate_surface",
    "split_of",
    "split_seeds",
    "split_sizes",
    "stack_samples",
]
