"""The decoded image handed from the I/O layer to models and renderers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pydicom import Dataset

__all__ = ["FORMATS", "DecodedImage"]

FORMATS = ("png", "jpeg", "tiff", "npy", "dicom")


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """One decoded image (one frame of a multi-frame source).

    array: float32 (C, H, W) in [0, 1], C = 1 (grey) or 3 (RGB).
    format: one of :data:`FORMATS`.
    bit_depth: bits per sample of the source (DICOM: Bits Stored; npy: itemsize * 8).
    dicom: for DICOM sources, a reduced copy of the source dataset without pixel data,
        holding only what DICOM outputs need (see :mod:`lrpseg.io.dicom_ref`).
    frame: 0-based index of the decoded frame when the source has several frames
        (multi-frame DICOM, multi-page TIFF), else None.
    frames: number of frames (pages) in the source.
    warnings: what the caller should know about the input (lrpseg.io.levels), for the result.
    raw: source values before scaling into [0, 1], same (C, H, W) shape, source dtype
        (DICOM: stored values before modality/VOI LUT, colour already converted to RGB).
    """

    array: np.ndarray
    format: str
    bit_depth: int
    channels: int
    height: int
    width: int
    dicom: Dataset | None = None
    frame: int | None = None
    raw: np.ndarray | None = None
    frames: int = 1
    warnings: tuple[str, ...] = ()

    @classmethod
    def build(
        cls,
        array: np.ndarray,
        raw: np.ndarray,
        *,
        format: str,
        bit_depth: int,
        dicom: Dataset | None = None,
        frame: int | None = None,
        frames: int = 1,
    ) -> DecodedImage:
        """Fill channels/height/width from a (C, H, W) array."""
        if array.ndim != 3 or array.shape[0] not in (1, 3) or array.dtype != np.float32:
            raise AssertionError(f"internal: expected float32 (C,H,W), got {array.dtype} {array.shape}")
        c, h, w = array.shape
        return cls(
            array=np.ascontiguousarray(array),
            format=format,
            bit_depth=int(bit_depth),
            channels=c,
            height=h,
            width=w,
            dicom=dicom,
            frame=frame,
            raw=np.ascontiguousarray(raw.astype(raw.dtype.newbyteorder("="), copy=False)),
            frames=frames,
        )
