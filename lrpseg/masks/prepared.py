"""A relevance map checked once, with the work several extractors share computed once.

A job runs all four extractors on the same map: each used to check and convert it, divide it by
max |R|, and the GMM and the BMM each ran the same 5x5 mean filter and sorted its values (a
sort of 65536 float64 values costs more than a GMM EM iteration). `prepare` does that work at
most once per map; every extractor accepts a PreparedMap wherever it accepts a relevance map.
The shared values are the ones each extractor computed itself before, so the results are too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from torch import Tensor

from lrpseg.masks.filters import mean_filter
from lrpseg.masks.result import as_relevance_map, min_max, scaled
from lrpseg.masks.sampling import sort_values


@dataclass
class PreparedMap:
    """relevance: the checked float64 map on its device; scaled = relevance / scale, scale = max |relevance|
    (0.0 for an all-zero map). Filtered maps and their sorted values are computed on first use."""

    relevance: Tensor
    scaled: Tensor
    scale: float
    _filtered: dict[int, Tensor] = field(default_factory=dict, repr=False)
    _sorted: dict[int, Tensor] = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.relevance.shape)

    @cached_property
    def scaled_range(self) -> tuple[float, float]:
        """(min, max) of scaled."""
        return min_max(self.scaled)

    def filtered(self, size: int) -> Tensor:
        """mean_filter(scaled, size), computed once per size."""
        if size not in self._filtered:
            self._filtered[size] = mean_filter(self.scaled, size)
        return self._filtered[size]

    def sorted_filtered(self, size: int) -> Tensor:
        """The values of filtered(size) in ascending order (1-D), sorted once per size."""
        if size not in self._sorted:
            self._sorted[size] = sort_values(self.filtered(size))
        return self._sorted[size]


def prepare(relevance: Any) -> PreparedMap:
    """Check a relevance map (as_relevance_map: InvalidRelevanceError for a bad one) and scale it
    once; a PreparedMap is returned as it is."""
    if isinstance(relevance, PreparedMap):
        return relevance
    r = as_relevance_map(relevance)
    s, scale = scaled(r)
    return PreparedMap(r, s, scale)
