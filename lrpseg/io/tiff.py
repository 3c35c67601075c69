"""TIFF decoding with tifffile (compressed TIFFs through imagecodecs).

Sizes come from the page's tags before any strip or tile is decoded. A file with
several full-resolution pages is multi-frame: the caller picks one with ``frame``
(reduced-resolution pages, e.g. pyramid levels or thumbnails, are not counted).
"""

from __future__ import annotations

import io
import struct

import numpy as np
import tifffile

from lrpseg.io.errors import ImageDecodeError
from lrpseg.io.image import DecodedImage
from lrpseg.io.limits import Limits, select_frame
from lrpseg.io.scaling import scale_by_dtype, scale_by_max, scale_float, to_chw

__all__ = ["decode_tiff"]

_P = tifffile.PHOTOMETRIC
_READ_ERRORS = (tifffile.TiffFileError, ValueError, struct.error, IndexError, KeyError, EOFError, OSError)


def decode_tiff(data: bytes, limits: Limits, frame: int | None) -> DecodedImage:
    try:
        tif = tifffile.TiffFile(io.BytesIO(data))
    except _READ_ERRORS as exc:
        raise ImageDecodeError(400, "tiff_malformed", "TIFF header or directory is malformed") from exc
    with tif:
        try:
            pages = _full_pages(tif)
        except ImageDecodeError:
            raise
        except _READ_ERRORS as exc:
            raise ImageDecodeError(400, "tiff_malformed", "TIFF image directory is malformed") from exc
        if not pages:
            raise ImageDecodeError(422, "empty_image", "TIFF contains no image")
        index = select_frame(len(pages), frame, "TIFF")
        page = pages[index]
        if page.imagedepth > 1:
            raise ImageDecodeError(422, "bad_ndim", f"TIFF page is a volume of depth {page.imagedepth}; send 2-D pages")
        limits.check(page.imagelength, page.imagewidth, "TIFF image")
        _check_compression(page)
        try:
            pixels = page.asarray()
        except _READ_ERRORS + (RuntimeError,) as exc:
            raise ImageDecodeError(400, "tiff_corrupt", "TIFF pixel data is corrupt or truncated") from exc
        raw, array = _to_unit(page, pixels)
    multi = len(pages) > 1
    return DecodedImage.build(
        array,
        raw,
        format="tiff",
        bit_depth=page.bitspersample,
        frame=index if multi else None,
        frames=len(pages),
    )


MAX_PAGES = 4096


def _full_pages(tif: tifffile.TiffFile) -> list[tifffile.TiffPage]:
    """The full-resolution pages, read one directory at a time with two guards: tifffile
    follows a directory chain that loops back on itself forever (each lap a new page object),
    and a chain of millions of tiny directories would cost as much; both end here."""
    seen: set[int] = set()
    pages = []
    for index, page in enumerate(tif.pages):
        if index >= MAX_PAGES:
            raise ImageDecodeError(413, "too_many_pages", f"TIFF has more than {MAX_PAGES} pages")
        if page.offset in seen:
            raise ImageDecodeError(400, "tiff_malformed", "TIFF page directories loop back on themselves")
        seen.add(page.offset)
        if not page.is_reduced:
            pages.append(page)
    return pages


def _check_compression(page: tifffile.TiffPage) -> None:
    if page.compression == 1:
        return
    try:
        tifffile.TIFF.DECOMPRESSORS[page.compression]
    except KeyError:
        raise ImageDecodeError(
            415, "unsupported_compression", f"TIFF compression {page.compression!s} is not supported"
        ) from None


def _samples_last(page: tifffile.TiffPage, pixels: np.ndarray) -> np.ndarray:
    """Return (H, W) or (H, W, S) whatever the planar configuration."""
    axes = page.axes
    if axes == "SYX":
        return np.moveaxis(pixels, 0, 2)
    if axes in ("YX", "YXS"):
        return pixels
    raise ImageDecodeError(422, "bad_ndim", f"TIFF page has axes {axes!r}; expected a 2-D image")


def _to_unit(page: tifffile.TiffPage, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (raw (C,H,W), float32 array in [0, 1])."""
    pixels = _samples_last(page, pixels)
    photometric = page.photometric
    invert = False
    if photometric == _P.PALETTE:
        if page.colormap is None:
            raise ImageDecodeError(400, "tiff_malformed", "palette TIFF has no colour map")
        pixels = np.moveaxis(page.colormap[:, pixels], 0, -1)  # uint16 RGB per the TIFF spec
        raw = to_chw(pixels)
        return raw, scale_by_max(raw, 65535)
    if photometric in (_P.MINISBLACK, _P.MINISWHITE):
        invert = photometric == _P.MINISWHITE
        if pixels.ndim == 3:
            if pixels.shape[2] != 2:
                raise ImageDecodeError(
                    422, "bad_channels", f"grey TIFF has {pixels.shape[2]} samples per pixel; expected 1 or 2"
                )
            pixels = pixels[:, :, 0]  # grey + alpha
    elif photometric == _P.RGB or (photometric == _P.YCBCR and page.compression == 7):
        # tifffile hands JPEG-compressed YCbCr pages over as RGB
        if pixels.ndim != 3 or pixels.shape[2] < 3:
            raise ImageDecodeError(422, "bad_channels", "RGB TIFF has fewer than 3 samples per pixel")
        pixels = pixels[:, :, :3]  # drop alpha / extra samples
    else:
        raise ImageDecodeError(
            415, "unsupported_photometric", f"TIFF photometric interpretation {photometric!s} is not supported"
        )
    raw = to_chw(pixels)
    array = _scale(raw, page.bitspersample)
    return raw, (1.0 - array if invert else array)


def _scale(raw: np.ndarray, bits: int) -> np.ndarray:
    if raw.dtype.kind == "f":
        return scale_float(raw)
    if raw.dtype.kind == "u" and 0 < bits <= raw.dtype.itemsize * 8:
        return scale_by_max(raw, 2**bits - 1)
    return scale_by_dtype(raw)
