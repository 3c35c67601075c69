"""The GMM's k-means start: scikit-learn's KMeans labels, computed without KMeans.fit."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from lrpseg.masks import kmeans, prepare
from lrpseg.masks.gaussian_mixture import MAX_FIT_SAMPLES
from lrpseg.masks.sampling import quantile_sample
from lrpseg.masks.synthetic import lrp_like_map


def sklearn_labels(values: np.ndarray, k: int, seed: int) -> np.ndarray:
    with threadpool_limits(limits=1):
        return (
            KMeans(n_clusters=k, n_init=1, random_state=np.random.RandomState(seed)).fit(values.reshape(-1, 1)).labels_
        )


def samples() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    found = [rng.standard_t(3, 4000), np.round(rng.normal(size=3000), 1), rng.random(40)]
    for seed, zeros in ((0, False), (4, True)):
        relevance, _ = lrp_like_map((256, 256), seed=seed)
        if zeros:
            relevance[:150] = 0.0
        prepared = prepare(relevance)
        filtered = prepared.filtered(5)
        peak = float(filtered.abs().max())
        ordered = prepared.sorted_filtered(5) / peak
        found.append(quantile_sample((filtered / peak).reshape(-1), MAX_FIT_SAMPLES, ordered=ordered).numpy())
    return found


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_labels_equal_sklearn_kmeans(k: int, seed: int) -> None:
    for values in samples():
        assert np.array_equal(kmeans.kmeans_labels(values, k, seed), sklearn_labels(values, k, seed))


def test_an_emptied_cluster_falls_back_to_kmeans(monkeypatch: pytest.MonkeyPatch) -> None:
    values = np.random.default_rng(0).normal(size=500)
    monkeypatch.setattr(kmeans, "lloyd_labels", lambda *args: None)
    assert np.array_equal(kmeans.kmeans_labels(values, 3, 5), sklearn_labels(values, 3, 5))
