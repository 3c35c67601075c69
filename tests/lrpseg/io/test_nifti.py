"""NIfTI volumes: axes, values, 4-D frames, limits and refusals."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from lrpseg.io import ImageDecodeError, decode_image
from lrpseg.io.sniff import sniff


def nifti_bytes(values: np.ndarray, affine: np.ndarray | None = None, version: int = 1) -> bytes:
    image_class = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    return image_class(values, np.eye(4) if affine is None else affine).to_bytes()


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("compress", [False, True])
def test_volume_axes_and_values(version: int, compress: bool) -> None:
    values = np.random.default_rng(0).normal(0, 100, (6, 7, 5)).astype(np.float32)  # (x, y, z)
    data = nifti_bytes(values, version=version)
    data = gzip.compress(data) if compress else data
    assert sniff(data) == "nifti"
    image = decode_image(data)
    assert (image.format, image.depth, image.channels, image.height, image.width) == ("nifti", 5, 1, 7, 6)
    expected = values.transpose(2, 1, 0)  # (z, y, x) = (D, H, W)
    np.testing.assert_allclose(image.raw[0], expected, rtol=1e-6)
    lo, hi = expected.min(), expected.max()
    np.testing.assert_allclose(image.array[0], (expected - lo) / (hi - lo), atol=1e-6)


def test_scaling_and_orientation_follow_the_header() -> None:
    """scl_slope/inter applied; an x-flipped affine is brought to RAS+ (nibabel's canonical)."""
    stored = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    image = nib.Nifti1Image(stored, np.diag([-1.0, 1.0, 1.0, 1.0]))
    image.header.set_slope_inter(2.0, -10.0)
    decoded = decode_image(image.to_bytes())
    expected = (stored[::-1] * 2.0 - 10.0).transpose(2, 1, 0)
    np.testing.assert_allclose(decoded.raw[0], expected)


def test_time_series_needs_a_frame() -> None:
    values = np.random.default_rng(1).random((4, 4, 3, 2)).astype(np.float32)
    data = nifti_bytes(values)
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data)
    assert (info.value.status, info.value.code) == (422, "multi_frame")
    second = decode_image(data, frame=1)
    np.testing.assert_allclose(second.array[0], values[..., 1].transpose(2, 1, 0), rtol=1e-6)
    assert (second.frame, second.frames) == (1, 2)


def test_voxel_limit_is_413_before_decoding() -> None:
    data = nifti_bytes(np.zeros((8, 8, 8), np.uint8))
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, max_voxels=511)
    assert (info.value.status, info.value.code) == (413, "too_many_voxels")
    assert decode_image(data, max_voxels=512).depth == 8


def test_truncated_and_non_finite_are_refused() -> None:
    data = nifti_bytes(np.ones((4, 4, 4), np.float32))
    with pytest.raises(ImageDecodeError) as info:
        decode_image(gzip.compress(data[:-10]))
    assert (info.value.status, info.value.code) == (400, "nifti_truncated")
    bad = np.ones((4, 4, 4), np.float32)
    bad[1, 2, 3] = np.nan
    with pytest.raises(ImageDecodeError) as info:
        decode_image(nifti_bytes(bad))
    assert (info.value.status, info.value.code) == (422, "non_finite")


def test_other_gzip_is_still_415() -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(gzip.compress(b"just some text" * 100))
    assert info.value.status == 415


def test_corrupt_headers_are_decode_errors_never_crashes() -> None:
    """Random byte flips in the header (magic kept): only ImageDecodeError, or a clean decode."""
    good = nifti_bytes(np.ones((4, 4, 4), np.float32))
    rng = np.random.default_rng(0)
    for _ in range(200):
        data = bytearray(good)
        for _ in range(int(rng.integers(1, 6))):
            data[int(rng.integers(0, 344))] = int(rng.integers(0, 256))
        try:
            decode_image(bytes(data))
        except ImageDecodeError as exc:
            assert exc.status in (400, 413, 415, 422)
