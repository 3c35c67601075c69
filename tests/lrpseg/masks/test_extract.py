from __future__ import annotations

import json

import numpy as np
import pytest

from lrpseg.masks import EXTRACTORS, MaskResult, extract


@pytest.mark.parametrize("name", sorted(EXTRACTORS))
def test_extract_runs_each_extractor_by_name(name: str, lrp_map: tuple[np.ndarray, np.ndarray]) -> None:
    result = extract(name, lrp_map[0], seed=0)
    direct = EXTRACTORS[name](lrp_map[0])
    assert isinstance(result, MaskResult) and result.method == name
    assert np.array_equal(result.mask, direct.mask)
    summary = result.to_dict()
    assert summary["pixels"] == int(result.mask.sum()) and summary["method"] == name
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary


def test_extract_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown mask extractor 'otsu'"):
        extract("otsu", np.ones((2, 2)))
