"""One prepared map shared by every extractor of a job gives the results of separate calls."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lrpseg.masks import EXTRACTORS, InvalidRelevanceError, extract, extract_all, prepare
from lrpseg.masks.filters import mean_filter
from lrpseg.masks.synthetic import lrp_like_map


def assert_same_result(a, b) -> None:  # type: ignore[no-untyped-def]
    assert np.array_equal(a.mask, b.mask)
    assert (a.score is None and b.score is None) or np.array_equal(a.score, b.score)
    assert a.params == b.params and a.threshold == b.threshold
    assert (a.iterations, a.converged, a.note) == (b.iterations, b.converged, b.note)


@pytest.mark.parametrize("zeros", [False, True])
def test_extract_all_equals_separate_calls(zeros: bool) -> None:
    relevance, _ = lrp_like_map((256, 256), seed=6)  # GMM and BMM both subsample: both use the shared sort
    if zeros:
        relevance[:100] = 0.0
    together = extract_all(sorted(EXTRACTORS), torch.from_numpy(relevance), seed=3)
    assert list(together) == sorted(EXTRACTORS)
    for name, found in together.items():
        assert_same_result(found, extract(name, relevance, seed=3))


def test_prepared_map_holds_the_shared_work() -> None:
    relevance, _ = lrp_like_map((64, 64), seed=1)
    prepared = prepare(relevance)
    assert prepare(prepared) is prepared
    scale = np.abs(relevance).max()
    assert prepared.scale == scale and np.array_equal(prepared.scaled.numpy(), relevance / scale)
    assert prepared.filtered(5) is prepared.filtered(5)  # computed once
    np.testing.assert_array_equal(prepared.filtered(5).numpy(), mean_filter(relevance / scale, 5))
    np.testing.assert_array_equal(prepared.sorted_filtered(3).numpy(), np.sort(prepared.filtered(3).numpy().ravel()))
    assert prepared.scaled_range == (float((relevance / scale).min()), float((relevance / scale).max()))


def test_degenerate_maps_through_extract_all() -> None:
    found = extract_all(["simple", "gmm", "bmm", "component"], np.zeros((8, 8)))
    assert [r.note for r in found.values()] == ["constant map"] * 3 + ["no positive relevance"]
    with pytest.raises(InvalidRelevanceError):
        extract_all(["gmm"], np.full((4, 4), np.inf))
