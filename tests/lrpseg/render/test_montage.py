"""Slices of a volume tiled into one picture."""

from __future__ import annotations

import numpy as np
import pytest

from lrpseg.render.montage import grid_shape, montage_slices, tile


@pytest.mark.parametrize(
    ("depth", "count", "expected"),
    [(1, 9, [0]), (5, 9, [0, 1, 2, 3, 4]), (17, 9, [0, 2, 4, 6, 8, 10, 12, 14, 16]), (10, 1, [5])],
)
def test_evenly_spaced_slices(depth: int, count: int, expected: list[int]) -> None:
    assert montage_slices(depth, count) == expected


def test_tile_places_slices_row_by_row() -> None:
    volume = np.arange(5 * 2 * 3).reshape(1, 5, 2, 3)
    out = tile(volume, [0, 1, 2, 4], fill=-1, gap=1)
    assert grid_shape(4) == (2, 2) and grid_shape(5) == (2, 3)
    assert out.shape == (1, 2 * 2 + 1, 2 * 3 + 1)
    assert (out[0, 3:5, 4:7] == volume[0, 4]).all() and (out[0, 2] == -1).all() and (out[0, :, 3] == -1).all()
    with pytest.raises(ValueError):
        montage_slices(0)
