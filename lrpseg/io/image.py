"""The decoded image handed from the I/O layer to models and renderers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pydicom import Dataset

__all__ = ["FORMATS", "DecodedImage"]

FORMATS = ("png", "jpeg", "tiff", "npy", "dicom", "nifti", "dicom-series")


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
        (DICOM: stored values before modality/VOI LUT, colour already converted to RGB;
        DICOM series: modality values, after Rescale Slope/Intercept).
    depth: for a volume (NIfTI, DICOM series, 3-D ``.npy``), the number of slices D; then
        ``array`` and ``raw`` are (C, D, H, W). None for a 2-D image.
    modality: the DICOM Modality (CT, MR, OT, ...) of a DICOM source, else None.
    series: for a DICOM series, each slice's reduced source dataset (as ``dicom``), in slice
        order: what a DICOM SEG of the volume references.
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
    depth: int | None = None
    warnings: tuple[str, ...] = ()
    modality: str | None = None
    series: tuple[Dataset, ...] | None = None

    @property
    def is_volume(self) -> bool:
        return self.depth is not None

    @property
    def pixels(self) -> int:
        """H x W, or D x H x W for a volume: the size of one channel."""
        return int(np.prod(self.array.shape[1:]))

    @property
    def shape(self) -> tuple[int, ...]:
        """(C, H, W), or (C, D, H, W) for a volume."""
        return tuple(self.array.shape)

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
        modality: str | None = None,
        series: tuple[Dataset, ...] | None = None,
    ) -> DecodedImage:
        """Fill channels/height/width (and depth) from a (C, H, W) or (C, D, H, W) array."""
        if array.ndim not in (3, 4) or array.shape[0] not in (1, 3) or array.dtype != np.float32:
            raise AssertionError(f"internal: expected float32 (C,H,W) or (C,D,H,W), got {array.dtype} {array.shape}")
        c, h, w = array.shape[0], array.shape[-2], array.shape[-1]
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
            depth=int(array.shape[1]) if array.ndim == 4 else None,
            modality=modality,
            series=series,
        )
