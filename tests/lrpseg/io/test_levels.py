"""lrpseg.io.levels: declared bit depth, windows, RGB -> one channel, and the small-range warning."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
import pytest
import tifffile
from pydicom.pixels import apply_modality_lut

from lrpseg.io import decode_image
from lrpseg.io.levels import LUMINANCE, InputLevels, LevelsError, apply_levels
from tests.service import factories


def twelve_bit_tiff(seed: int = 0) -> tuple[bytes, np.ndarray]:
    """What a 12-bit camera writes: 0..4095 in a 16-bit TIFF (BitsPerSample 16)."""
    image, _ = factories.defect_image(64, seed)
    values = (image.astype(np.uint16) * 16).clip(0, 4095).astype(np.uint16)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, values)
    return buffer.getvalue(), values


def test_twelve_bits_in_sixteen_warn_unless_declared() -> None:
    data, values = twelve_bit_tiff()
    decoded = decode_image(data)
    assert decoded.bit_depth == 16 and float(decoded.array.max()) <= 4095 / 65535 + 1e-7
    plain = apply_levels(decoded, InputLevels(), 1)
    (warning,) = plain.warnings
    span = 100 * (int(values.max()) - int(values.min())) / 65535
    assert f"uses {span:.1f} % of its 16-bit range" in warning and "params.input.bits" in warning
    declared = apply_levels(decoded, InputLevels(bits=12), 1)
    assert declared.warnings == ()
    np.testing.assert_array_equal(declared.array[0], (values / 4095).astype(np.float32))
    assert decoded.warnings == () and decoded.array.max() < 0.07  # the input itself is not changed


def test_bits_refuse_values_that_do_not_fit() -> None:
    data, _ = twelve_bit_tiff()
    with pytest.raises(LevelsError, match=r"do not fit 8 bits \(0..255\)") as caught:
        apply_levels(decode_image(data), InputLevels(bits=8), 1)
    assert caught.value.field == "params.input.bits"
    floats = io.BytesIO()
    np.save(floats, np.full((4, 4), 0.5, np.float32))
    with pytest.raises(LevelsError, match="integer images"):
        apply_levels(decode_image(floats.getvalue()), InputLevels(bits=12), 1)


def test_a_window_maps_its_band_onto_the_unit_range() -> None:
    raw = np.array([[0, 1000, 1500, 2000, 4000]], np.uint16)
    buffer = io.BytesIO()
    np.save(buffer, raw)
    out = apply_levels(decode_image(buffer.getvalue()), InputLevels(window=(1500.0, 1000.0)), 1)
    np.testing.assert_allclose(out.array[0, 0], [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-7)


def test_a_dicom_window_is_in_modality_units() -> None:
    path = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
    ds = pydicom.dcmread(path)
    hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    out = apply_levels(decode_image(path.read_bytes()), InputLevels(window=(40.0, 400.0)), 1)
    want = np.clip((hu - (40 - 200)) / 400, 0, 1)
    np.testing.assert_allclose(out.array[0], want, atol=1e-6)
    with pytest.raises(LevelsError, match="DICOM declares"):
        apply_levels(decode_image(path.read_bytes()), InputLevels(bits=12), 1)


def test_rgb_to_one_channel() -> None:
    grey, _ = factories.defect_image(32, channels=3)
    decoded = decode_image(factories.png_bytes(grey))
    assert decoded.channels == 3
    assert apply_levels(decoded, InputLevels(), 1).channels == 3  # "reject": left for the model check
    lum = apply_levels(decoded, InputLevels(channels="luminance"), 1)
    assert lum.channels == 1 and lum.raw is not None and lum.raw.shape == (1, 32, 32)
    np.testing.assert_array_equal(lum.array[0], decoded.array[0])  # grey saved as RGB: exactly the grey
    colour = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    decoded = decode_image(factories.png_bytes(colour))
    lum = apply_levels(decoded, InputLevels(channels="luminance"), 1)
    want = (colour.astype(np.float64) / 255) @ np.asarray(LUMINANCE)
    np.testing.assert_allclose(lum.array[0], want, rtol=1e-6)
    first = apply_levels(decoded, InputLevels(channels="first"), 1)
    np.testing.assert_array_equal(first.array[0], colour[..., 0] / np.float32(255))
    assert apply_levels(decoded, InputLevels(channels="luminance"), 3).channels == 3  # an RGB model keeps RGB
