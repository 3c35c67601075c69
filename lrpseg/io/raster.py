"""PNG and JPEG decoding.

PNG sizes are read from the IHDR chunk before anything is inflated, so a small file that
declares a huge image (a decompression bomb) is refused without decoding a pixel.
8-bit and lower PNGs go through Pillow; 16-bit ones through imagecodecs (libpng),
because Pillow truncates 16-bit RGB and grey+alpha PNGs to 8 bits.
"""

from __future__ import annotations

import io
import struct
import zlib

import imagecodecs
import numpy as np
from PIL import Image

from lrpseg.io.errors import ImageDecodeError
from lrpseg.io.image import DecodedImage
from lrpseg.io.limits import Limits, select_frame
from lrpseg.io.scaling import drop_alpha, scale_by_max, to_chw

__all__ = ["decode_jpeg", "decode_png", "png_header"]

_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError)
_PNG_COLOR_TYPES = {0: "grey", 2: "RGB", 3: "palette", 4: "grey+alpha", 6: "RGBA"}
_PNG_BIT_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


def png_header(data: bytes) -> tuple[int, int, int, int]:
    """Return (height, width, bit depth, colour type) from the IHDR chunk."""
    if len(data) < 33 or data[12:16] != b"IHDR" or struct.unpack(">I", data[8:12])[0] != 13:
        raise ImageDecodeError(400, "png_malformed", "PNG has no valid IHDR header chunk")
    width, height, bit_depth, color_type = struct.unpack(">IIBB", data[16:26])
    if bit_depth not in _PNG_BIT_DEPTHS.get(color_type, ()):
        raise ImageDecodeError(
            400,
            "png_malformed",
            f"PNG header declares an invalid bit depth {bit_depth} for colour type {color_type}",
        )
    return height, width, bit_depth, color_type


def decode_png(data: bytes, limits: Limits, frame: int | None) -> DecodedImage:
    height, width, bit_depth, color_type = png_header(data)
    limits.check(height, width, "PNG image")
    select_frame(1, frame, "PNG image")
    if bit_depth == 16:
        try:
            pixels = imagecodecs.png_decode(data)
        except (imagecodecs.PngError, ValueError, RuntimeError) as exc:
            raise ImageDecodeError(400, "png_corrupt", "PNG pixel data is corrupt or truncated") from exc
        max_value = 65535
    else:
        pixels = _pillow_pixels(data, "PNG")
        max_value = 255
    pixels = drop_alpha(pixels)
    _check_decoded_shape(pixels, height, width, "PNG")
    raw = to_chw(pixels)
    array = scale_by_max(raw, max_value)
    depth = 8 if color_type == 3 else bit_depth
    return DecodedImage.build(array, raw, format="png", bit_depth=depth)


# Start-of-frame markers (baseline, progressive, lossless, arithmetic); not C4/C8/CC (tables).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_header(data: bytes) -> tuple[int, int] | None:
    """(height, width) from the first start-of-frame segment, or None if there is none to read.

    Read before Pillow opens the file: Pillow refuses images above its own pixel limit
    with DecompressionBombError, which is no ImageDecodeError, and we want our limits to
    answer first, the same way for every format.
    """
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF:
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return height, width
        if marker == 0xDA or length < 2:  # scan data follows: no frame header before it
            return None
        pos += 2 + length
    return None


def decode_jpeg(data: bytes, limits: Limits, frame: int | None) -> DecodedImage:
    declared = jpeg_header(data)
    if declared is not None and declared[0] > 0:  # height 0 (DNL) is sized by the decoder
        limits.check(*declared, "JPEG image")
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(413, "too_many_pixels", f"JPEG image is too large: {exc}") from exc
    except _PIL_ERRORS as exc:
        raise ImageDecodeError(400, "jpeg_corrupt", "JPEG header is malformed") from exc
    limits.check(height, width, "JPEG image")
    select_frame(1, frame, "JPEG image")
    pixels = drop_alpha(_load(image, "JPEG"))
    _check_decoded_shape(pixels, height, width, "JPEG")
    raw = to_chw(pixels)
    return DecodedImage.build(scale_by_max(raw, 255), raw, format="jpeg", bit_depth=8)


def _pillow_pixels(data: bytes, what: str) -> np.ndarray:
    try:
        image = Image.open(io.BytesIO(data))
    except _PIL_ERRORS as exc:
        raise ImageDecodeError(400, f"{what.lower()}_corrupt", f"{what} header is malformed") from exc
    return _load(image, what)


def _load(image: Image.Image, what: str) -> np.ndarray:
    """Decode with Pillow into uint8 (H, W) grey or (H, W, 3|4) colour."""
    slug = f"{what.lower()}_corrupt"
    try:
        image.load()
        if image.mode in ("P", "PA"):
            image = image.convert("RGBA")
        elif image.mode == "1":
            image = image.convert("L")
        elif image.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            image = image.convert("RGB")
        if image.mode not in ("L", "LA", "RGB", "RGBA"):
            raise ImageDecodeError(415, "unsupported_mode", f"{what} pixel mode {image.mode} is not supported")
        return np.asarray(image)
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(413, "too_many_pixels", f"{what} image is too large to decode") from exc
    except _PIL_ERRORS as exc:
        raise ImageDecodeError(400, slug, f"{what} pixel data is corrupt or truncated") from exc


def _check_decoded_shape(pixels: np.ndarray, height: int, width: int, what: str) -> None:
    if pixels.shape[:2] != (height, width):
        raise ImageDecodeError(
            400, f"{what.lower()}_corrupt", f"{what} decoded to {pixels.shape[:2]}, header says {(height, width)}"
        )
