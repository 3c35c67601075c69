"""png_file against Pillow's decoder: pixels, modes and bit depths round-trip exactly, CRCs check."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lrpseg.render.png_file import png_file

RNG = np.random.default_rng(7)


def _decoded(data: bytes) -> Image.Image:
    Image.open(io.BytesIO(data)).verify()  # chunk CRCs and structure
    return Image.open(io.BytesIO(data))


@pytest.mark.parametrize(
    ("pixels", "mode"),
    [
        (RNG.integers(0, 256, (37, 53), dtype=np.uint8), "L"),
        (RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8), "RGB"),
        (RNG.integers(0, 65536, (37, 53), dtype=np.uint16), "I;16"),
        (np.array([[0, 255]], dtype=np.uint8), "L"),
        (np.full((1, 1, 3), 200, dtype=np.uint8), "RGB"),
        (np.array([[1], [2], [65535]], dtype=np.uint16), "I;16"),
    ],
    ids=["grey", "rgb", "grey16", "one-row", "one-pixel", "one-column-16"],
)
@pytest.mark.parametrize("level", [0, 1, 9])
def test_pixels_round_trip_through_pillow(pixels: np.ndarray, mode: str, level: int) -> None:
    image = _decoded(png_file(pixels, level))
    assert image.mode == mode and image.size == (pixels.shape[1], pixels.shape[0])
    assert np.array_equal(np.asarray(image), pixels)


def test_views_are_written_as_their_values() -> None:
    rgb = RNG.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    for view in (rgb[:, :, :3], rgb[::2, ::3, :3], rgb[:, :, 0].T):
        assert np.array_equal(np.asarray(_decoded(png_file(view, 1))), view)


@pytest.mark.parametrize(
    "pixels",
    [np.zeros((4, 4), np.float32), np.zeros((4, 4, 4), np.uint8), np.zeros((0, 4), np.uint8), np.zeros(4, np.uint8)],
    ids=["float", "rgba", "empty", "1-d"],
)
def test_other_arrays_are_refused(pixels: np.ndarray) -> None:
    with pytest.raises(ValueError, match="PNG"):
        png_file(pixels, 1)
