"""A DICOM series as a zip of its instances -> one volume (pydicom's CT_small as the slices)."""

from __future__ import annotations

import copy
import io
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import generate_uid

from lrpseg.io import ImageDecodeError, decode_image
from lrpseg.io.dicom_series import decode_dicom_series
from lrpseg.io.limits import Limits


def series(n: int = 4, seed: int = 0, window: bool = False) -> list[tuple[float, pydicom.Dataset]]:
    """n instances of one series: CT_small's pixels shifted per slice, z positions in random order."""
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    uid = generate_uid()
    out = []
    for i, z in enumerate(np.random.default_rng(seed).permutation(n)):
        ds = copy.deepcopy(source)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = uid, generate_uid()
        ds.ImagePositionPatient = [0.0, 0.0, float(z) * 2.5]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.InstanceNumber = n - i  # disagrees with the positions: positions win
        ds.PixelData = (source.pixel_array + int(z) * 7).astype(source.pixel_array.dtype).tobytes()
        if window:  # CT_small has none; a soft-tissue window in HU
            ds.WindowCenter, ds.WindowWidth = 40, 400
        out.append((float(z), ds))
    return out


def encode(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_series_sorted_by_position_with_modality_values() -> None:
    instances = series()
    volume = decode_image(zipped({f"s{i}.dcm": encode(ds) for i, (_, ds) in enumerate(instances)}))
    ordered = [ds for _, ds in sorted(instances, key=lambda t: t[0])]
    expected = np.stack([apply_modality_lut(ds.pixel_array, ds) for ds in ordered]).astype(np.float64)
    assert (volume.format, volume.depth, volume.modality, volume.dicom) == ("dicom-series", 4, "CT", None)
    np.testing.assert_allclose(volume.raw[0], expected)
    np.testing.assert_allclose(volume.array[0], (expected - expected.min()) / np.ptp(expected), atol=1e-6)


def test_first_slice_window_applies_to_the_volume() -> None:
    instances = series(3, window=True)
    volume = decode_dicom_series([encode(ds) for _, ds in instances], Limits())
    first = min(instances, key=lambda t: t[0])[1]
    values = volume.raw[0].astype(np.float64)
    windowed = apply_voi_lut(values, first, index=0)
    probe = apply_voi_lut(np.array([-1e15, 1e15]), first, index=0)
    np.testing.assert_allclose(volume.array[0], (windowed - probe.min()) / np.ptp(probe), atol=1e-6)


def test_instance_number_orders_without_positions() -> None:
    instances = series(3)
    for _, ds in instances:
        del ds.ImagePositionPatient
    volume = decode_dicom_series([encode(ds) for _, ds in instances], Limits())
    by_number = sorted((ds.InstanceNumber, ds) for _, ds in instances)
    np.testing.assert_allclose(volume.raw[0, 0], apply_modality_lut(by_number[0][1].pixel_array, by_number[0][1]))


@pytest.mark.parametrize(
    ("spoil", "code"),
    [
        (lambda d: setattr(d[1], "SeriesInstanceUID", generate_uid()), "mixed_series"),
        (lambda d: setattr(d[1], "ImagePositionPatient", d[0].ImagePositionPatient), "duplicate_slices"),
    ],
)
def test_inconsistent_series_is_422(spoil, code: str) -> None:
    datasets = [ds for _, ds in series(3)]
    spoil(datasets)
    with pytest.raises(ImageDecodeError) as info:
        decode_dicom_series([encode(ds) for ds in datasets], Limits())
    assert (info.value.status, info.value.code) == (422, code)


def test_voxel_limit_and_npz() -> None:
    files = [encode(ds) for _, ds in series(3)]
    with pytest.raises(ImageDecodeError) as info:
        decode_image(zipped({f"{i}.dcm": f for i, f in enumerate(files)}), max_voxels=3 * 128 * 128 - 1)
    assert (info.value.status, info.value.code) == (413, "too_many_voxels")
    buffer = io.BytesIO()
    np.savez(buffer, image=np.zeros((2, 2)))
    with pytest.raises(ImageDecodeError) as info:
        decode_image(buffer.getvalue())
    assert info.value.status == 415


def test_single_ct_keeps_its_modality() -> None:
    image = decode_image(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    assert image.modality == "CT" and image.depth is None


@pytest.mark.parametrize(
    ("files", "status"),
    [({"a.txt": b"hello world, not DICOM"}, 400), ({}, 422), ({"a.dcm": b"\0" * (64 << 20)}, 413)],
)
def test_bad_zips_are_refused(files: dict[str, bytes], status: int) -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(zipped(files), max_pixels=512 * 512)
    assert info.value.status == status
