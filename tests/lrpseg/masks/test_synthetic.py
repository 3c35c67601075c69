"""The synthetic maps have the statistics the extractors must cope with (ANCHORS: real LRP maps)."""

from __future__ import annotations

import numpy as np

from lrpseg.masks.synthetic import lrp_like_map


def test_lrp_like_map_is_heavy_tailed_and_partly_negative() -> None:
    relevance, truth = lrp_like_map((256, 256), seed=4)
    magnitude = np.abs(relevance)
    assert 0.33 <= np.mean(relevance < 0) <= 0.42
    assert 12 <= np.percentile(magnitude, 99) / np.median(magnitude) <= 330
    positive = np.clip(relevance, 0, None)
    assert truth.mean() < 0.06
    assert positive[truth].sum() / positive.sum() > 0.5  # a few % of pixels carry most positive relevance


def test_lrp_like_map_is_seeded() -> None:
    a, ta = lrp_like_map((64, 64), seed=3)
    b, tb = lrp_like_map((64, 64), seed=3)
    c, _ = lrp_like_map((64, 64), seed=4)
    assert np.array_equal(a, b) and np.array_equal(ta, tb)
    assert not np.array_equal(a, c)
