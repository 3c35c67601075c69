"""From relevance to masks: seed 001's Simple, GMM and BMM extractors (§3.3.2) and Component.

"simple", "gmm" and "bmm" are seed 001's procedures, exactly (their names are the API's);
"component" is the extractor to pick for a segmentation U-Net's whole-output explanation
(docs/masks-metrics-render.md compares them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from lrpseg.masks.beta_mixture import BetaComponent, BetaMixture, bmm, fit_beta_mixture
from lrpseg.masks.components import component, scaled_filter_size
from lrpseg.masks.errors import InvalidRelevanceError
from lrpseg.masks.gaussian_mixture import gmm
from lrpseg.masks.isodata import isodata_threshold, simple
from lrpseg.masks.prepared import PreparedMap, prepare
from lrpseg.masks.result import MaskResult

EXTRACTORS: dict[str, Callable[..., MaskResult]] = {"simple": simple, "gmm": gmm, "bmm": bmm, "component": component}
SEED001 = ("simple", "gmm", "bmm")  # seed 001's extractors, exactly as the paper defines them


def extract(name: str, relevance: Any, *, seed: int = 0) -> MaskResult:
    """Run the extractor called `name` ("simple", "gmm", "bmm" or "component"); seed reaches the GMM's k-means.
    relevance may be a PreparedMap (`prepare`), which several calls then share."""
    if name not in EXTRACTORS:
        raise ValueError(f"unknown mask extractor {name!r}; choose one of {sorted(EXTRACTORS)}")
    if name == "gmm":
        return gmm(relevance, seed=seed)
    return EXTRACTORS[name](relevance)


def extract_all(names: Iterable[str], relevance: Any, *, seed: int = 0) -> dict[str, MaskResult]:
    """extract() for each name on one map, which is checked, scaled, filtered and sorted once for all
    of them (PreparedMap): the same results as separate calls."""
    prepared = prepare(relevance)
    return {name: extract(name, prepared, seed=seed) for name in names}


__all__ = [
    "EXTRACTORS",
    "SEED001",
    "BetaComponent",
    "BetaMixture",
    "InvalidRelevanceError",
    "MaskResult",
    "PreparedMap",
    "bmm",
    "component",
    "extract",
    "extract_all",
    "fit_beta_mixture",
    "gmm",
    "isodata_threshold",
    "prepare",
    "scaled_filter_size",
    "simple",
]
