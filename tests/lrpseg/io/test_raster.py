"""PNG and JPEG decoding, checked against the arrays that were encoded."""

from __future__ import annotations

import io
import struct
import zlib

import imagecodecs
import numpy as np
import pytest
from PIL import Image

from lrpseg.io import ImageDecodeError, decode_image


def _pil_bytes(image: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _raw_png(width: int, height: int, rows: bytes, bit_depth: int = 8, color_type: int = 0) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(6)


def test_png_grey_8bit(rng: np.random.Generator) -> None:
    pixels = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    image = decode_image(_pil_bytes(Image.fromarray(pixels)))
    assert (image.format, image.channels, image.height, image.width, image.bit_depth) == ("png", 1, 37, 53, 8)
    np.testing.assert_array_equal(image.raw[0], pixels)
    np.testing.assert_array_equal(image.array[0], (pixels / 255.0).astype(np.float32))


def test_png_grey_16bit(rng: np.random.Generator) -> None:
    pixels = rng.integers(0, 65536, (20, 31), dtype=np.uint16)
    image = decode_image(imagecodecs.png_encode(pixels))
    assert image.bit_depth == 16 and image.raw.dtype == np.uint16
    np.testing.assert_array_equal(image.raw[0], pixels)
    np.testing.assert_allclose(image.array[0], pixels / 65535.0, rtol=0, atol=1e-7)
    # the same image written by Pillow (mode I;16) decodes identically
    np.testing.assert_array_equal(decode_image(_pil_bytes(Image.fromarray(pixels))).raw, image.raw)


def test_png_rgb_8_and_16bit(rng: np.random.Generator) -> None:
    rgb8 = rng.integers(0, 256, (9, 14, 3), dtype=np.uint8)
    image = decode_image(_pil_bytes(Image.fromarray(rgb8)))
    assert image.channels == 3
    np.testing.assert_array_equal(image.raw, np.moveaxis(rgb8, 2, 0))
    rgb16 = rng.integers(0, 65536, (9, 14, 3), dtype=np.uint16)
    image16 = decode_image(imagecodecs.png_encode(rgb16))  # Pillow would cut this to 8 bits
    np.testing.assert_array_equal(image16.raw, np.moveaxis(rgb16, 2, 0))
    np.testing.assert_allclose(image16.array, np.moveaxis(rgb16, 2, 0) / 65535.0, atol=1e-7)


def test_png_alpha_is_dropped(rng: np.random.Generator) -> None:
    rgba = rng.integers(0, 256, (8, 6, 4), dtype=np.uint8)
    image = decode_image(_pil_bytes(Image.fromarray(rgba, mode="RGBA")))
    np.testing.assert_array_equal(image.raw, np.moveaxis(rgba[..., :3], 2, 0))
    grey_alpha = rng.integers(0, 65536, (8, 6, 2), dtype=np.uint16)
    image = decode_image(imagecodecs.png_encode(grey_alpha))
    assert image.channels == 1
    np.testing.assert_array_equal(image.raw[0], grey_alpha[..., 0])


def test_png_palette_becomes_rgb(rng: np.random.Generator) -> None:
    indices = rng.integers(0, 16, (12, 10), dtype=np.uint8)
    palette = rng.integers(0, 256, (16, 3), dtype=np.uint8)
    picture = Image.fromarray(indices, mode="P")
    picture.putpalette(palette.ravel().tolist())
    image = decode_image(_pil_bytes(picture))
    assert image.channels == 3 and image.bit_depth == 8
    np.testing.assert_array_equal(image.raw, np.moveaxis(palette[indices], 2, 0))


def test_png_low_bit_depth_grey_scales_to_full_range() -> None:
    # 2-bit grey: 0, 1, 2, 3 -> 0, 1/3, 2/3, 1
    image = decode_image(_raw_png(4, 1, b"\x00" + bytes([0b00011011]), bit_depth=2))
    np.testing.assert_allclose(image.array[0, 0], [0, 1 / 3, 2 / 3, 1], atol=1e-6)
    assert image.bit_depth == 2


def test_png_decompression_bomb_refused_from_header() -> None:
    # declares 30000 x 30000 but holds a few hundred bytes: decoding would fail with 400
    bomb = _raw_png(30000, 30000, b"\x00" * 30001 * 4)
    assert len(bomb) < 1000
    with pytest.raises(ImageDecodeError) as info:
        decode_image(bomb)
    assert (info.value.status, info.value.code) == (413, "side_too_large")
    with pytest.raises(ImageDecodeError) as info:
        decode_image(bomb, max_side=40000)
    assert (info.value.status, info.value.code) == (413, "too_many_pixels")


def test_png_truncated_and_corrupt(rng: np.random.Generator) -> None:
    data = _pil_bytes(Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)))
    for broken in (data[: len(data) // 2], data[:20]):
        with pytest.raises(ImageDecodeError) as info:
            decode_image(broken)
        assert info.value.status == 400
    flipped = bytearray(data)
    flipped[60] ^= 0xFF  # inside IDAT: CRC mismatch
    with pytest.raises(ImageDecodeError) as info:
        decode_image(bytes(flipped))
    assert info.value.status == 400


def test_png_zero_size_is_422() -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(_raw_png(0, 5, b""))
    assert (info.value.status, info.value.code) == (422, "empty_image")


def test_jpeg_rgb_and_grey_match_pillow() -> None:
    yy, xx = np.mgrid[0:40, 0:24]
    rgb = np.stack([yy * 6, xx * 10, 255 - yy * 3], axis=-1).astype(np.uint8)  # smooth: JPEG keeps it
    data = _pil_bytes(Image.fromarray(rgb), "JPEG", quality=95)
    image = decode_image(data, filename="wrong-name.png", content_type="image/png")
    assert (image.format, image.channels, image.bit_depth) == ("jpeg", 3, 8)
    reference = np.asarray(Image.open(io.BytesIO(data)))
    np.testing.assert_array_equal(image.raw, np.moveaxis(reference, 2, 0))
    assert np.abs(image.raw.astype(int) - np.moveaxis(rgb, 2, 0)).mean() < 3  # it is the same picture
    grey = decode_image(_pil_bytes(Image.fromarray(rgb[..., 0]), "JPEG"))
    assert grey.channels == 1


def test_jpeg_cmyk_becomes_rgb(rng: np.random.Generator) -> None:
    cmyk = Image.fromarray(rng.integers(0, 256, (16, 16, 4), dtype=np.uint8), mode="CMYK")
    data = _pil_bytes(cmyk, "JPEG")
    image = decode_image(data)
    reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(image.raw, np.moveaxis(reference, 2, 0))


def test_jpeg_size_limit_and_truncation(rng: np.random.Generator) -> None:
    data = _pil_bytes(Image.fromarray(rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)), "JPEG")
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, max_pixels=64 * 48 - 1)
    assert info.value.status == 413
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data[: len(data) // 2])
    assert info.value.status == 400
