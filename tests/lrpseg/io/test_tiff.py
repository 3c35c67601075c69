"""TIFF decoding, written by tifffile and by Pillow."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile
from PIL import Image

from lrpseg.io import ImageDecodeError, decode_image


def _tiff(array: np.ndarray, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **kwargs)
    return buffer.getvalue()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("compression", [None, "lzw", "zlib"])
def test_tiff_grey(rng: np.random.Generator, dtype: type, compression: str | None) -> None:
    top = np.iinfo(dtype).max
    pixels = rng.integers(0, top + 1, (21, 17), dtype=dtype)
    image = decode_image(_tiff(pixels, compression=compression))
    assert (image.format, image.channels, image.bit_depth) == ("tiff", 1, np.dtype(dtype).itemsize * 8)
    np.testing.assert_array_equal(image.raw[0], pixels)
    np.testing.assert_allclose(image.array[0], pixels / float(top), rtol=0, atol=1e-7)


@pytest.mark.parametrize("planar", ["contig", "separate"])
def test_tiff_rgb_16bit(rng: np.random.Generator, planar: str) -> None:
    rgb = rng.integers(0, 65536, (3, 11, 13), dtype=np.uint16)
    stored = rgb if planar == "separate" else np.moveaxis(rgb, 0, 2)
    image = decode_image(_tiff(stored, photometric="rgb", planarconfig=planar))
    assert image.channels == 3
    np.testing.assert_array_equal(image.raw, rgb)


def test_tiff_written_by_pillow(rng: np.random.Generator) -> None:
    rgba = rng.integers(0, 256, (10, 12, 4), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, "TIFF")
    image = decode_image(buffer.getvalue())
    np.testing.assert_array_equal(image.raw, np.moveaxis(rgba[..., :3], 2, 0))


def test_tiff_miniswhite_is_inverted(rng: np.random.Generator) -> None:
    pixels = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    image = decode_image(_tiff(pixels, photometric="miniswhite"))
    np.testing.assert_allclose(image.array[0], 1.0 - pixels / 255.0, atol=1e-7)


def test_tiff_palette_becomes_rgb(rng: np.random.Generator) -> None:
    indices = rng.integers(0, 256, (6, 9), dtype=np.uint8)
    colormap = rng.integers(0, 65536, (3, 256), dtype=np.uint16)
    image = decode_image(_tiff(indices, photometric="palette", colormap=colormap))
    np.testing.assert_array_equal(image.raw, colormap[:, indices])


def test_tiff_float_follows_the_float_rule(rng: np.random.Generator) -> None:
    inside = rng.random((4, 4), dtype=np.float32)
    np.testing.assert_array_equal(decode_image(_tiff(inside)).array[0], inside)
    outside = inside * 1000 - 3
    expected = (outside - outside.min()) / (outside.max() - outside.min())
    np.testing.assert_allclose(decode_image(_tiff(outside)).array[0], expected, atol=1e-6)


def test_tiff_multipage_needs_a_frame(rng: np.random.Generator) -> None:
    pages = rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)
    data = _tiff(pages, photometric="minisblack")
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data)
    assert (info.value.status, info.value.code) == (422, "multi_frame")
    image = decode_image(data, frame=2)
    np.testing.assert_array_equal(image.raw[0], pages[2])
    assert (image.frame, image.frames) == (2, 3)
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, frame=3)
    assert info.value.code == "frame_out_of_range"


def test_tiff_limits_and_corruption(rng: np.random.Generator) -> None:
    data = _tiff(rng.integers(0, 256, (40, 30), dtype=np.uint8), compression="zlib")
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, max_side=39)
    assert info.value.status == 413
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data[:12])
    assert info.value.status == 400


def test_tiff_cmyk_is_415(rng: np.random.Generator) -> None:
    data = _tiff(rng.integers(0, 256, (4, 4, 4), dtype=np.uint8), photometric="separated")
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data)
    assert (info.value.status, info.value.code) == (415, "unsupported_photometric")
