"""DICOM decoding against pydicom's own shipped test files and pydicom's own decoders."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_color_lut
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from lrpseg.io import ImageDecodeError, decode_image
from tests.lrpseg.io.corpus import corpus_bytes, corpus_dataset, to_bytes


def _hu(name: str) -> np.ndarray:
    ds = corpus_dataset(name)
    return ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))


def _window_reference(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 linear window, normalised to [0, 1] (written out here)."""
    return np.clip((x - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


def test_ct_signed_rescale_without_window_is_minmax_of_hounsfield() -> None:
    image = decode_image(corpus_bytes("CT_small.dcm"))
    ds = corpus_dataset("CT_small.dcm")
    assert ds.PixelRepresentation == 1 and "WindowCenter" not in ds
    assert (image.format, image.channels, image.height, image.width, image.bit_depth) == ("dicom", 1, 128, 128, 16)
    np.testing.assert_array_equal(image.raw[0], ds.pixel_array)
    hu = _hu("CT_small.dcm")
    expected = (hu - hu.min()) / (hu.max() - hu.min())
    np.testing.assert_allclose(image.array[0], expected, rtol=0, atol=1e-6)
    assert image.array.dtype == np.float32 and image.frame is None


def test_mr_window_matches_the_standard_formula() -> None:
    image = decode_image(corpus_bytes("MR_small.dcm"))
    ds = corpus_dataset("MR_small.dcm")
    center = float(np.atleast_1d(ds.WindowCenter)[0])
    width = float(np.atleast_1d(ds.WindowWidth)[0])
    expected = _window_reference(_hu("MR_small.dcm"), center, width)
    np.testing.assert_allclose(image.array[0], expected, rtol=0, atol=1e-6)
    assert 0.0 < image.array.min() < image.array.max() <= 1.0


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_bigendian.dcm",  # explicit VR big endian
        "MR_small_expb.dcm",
        "MR_small_implicit.dcm",  # implicit VR little endian
        "MR_small_RLE.dcm",  # RLE lossless
        "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless (pylibjpeg-libjpeg)
        "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless (pylibjpeg-openjpeg)
        "MR_small_padded.dcm",
    ],
)
def test_lossless_encodings_equal_the_uncompressed_original(name: str) -> None:
    reference = decode_image(corpus_bytes("MR_small.dcm"))
    image = decode_image(corpus_bytes(name))
    np.testing.assert_array_equal(image.raw, reference.raw)
    np.testing.assert_array_equal(image.array, reference.array)


def test_jpeg_lossless_rgb_equals_rle_rgb() -> None:
    jpeg = decode_image(corpus_bytes("SC_rgb_jpeg_gdcm.dcm"))  # JPEG lossless P14 SV1
    rle = decode_image(corpus_bytes("SC_rgb_rle.dcm"))
    assert jpeg.channels == 3
    np.testing.assert_array_equal(jpeg.raw, rle.raw)


@pytest.mark.parametrize(
    "name",
    [
        "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, YBR_FULL
        "SC_rgb_dcmtk_+eb+cy+s2.dcm",  # JPEG baseline, YBR_FULL_422
        "JPGExtended.dcm",  # JPEG extended 12-bit
        "JPEGLSNearLossless_16.dcm",  # JPEG-LS near-lossless
        "SC_rgb_jls_lossy_line.dcm",
        "JPEG2000.dcm",  # JPEG 2000 lossy, signed
        "693_J2KI.dcm",
        "examples_jpeg2k.dcm",  # JPEG 2000, YBR_RCT
        "SC_ybr_full_422_uncompressed.dcm",
        "ExplVR_BigEnd.dcm",  # RGB big endian
        "SC_rgb_rle_16bit.dcm",
        "image_dfl.dcm",  # deflated
    ],
)
def test_raw_values_equal_pydicom_decoding(name: str) -> None:
    image = decode_image(corpus_bytes(name))
    expected = corpus_dataset(name).pixel_array
    expected = expected[np.newaxis] if expected.ndim == 2 else np.moveaxis(expected, 2, 0)
    np.testing.assert_array_equal(image.raw, expected)
    assert image.channels == expected.shape[0]
    assert image.array.min() >= 0.0 and image.array.max() <= 1.0


def test_rgb_scaled_by_bits_stored() -> None:
    image = decode_image(corpus_bytes("SC_rgb_rle_16bit.dcm"))
    np.testing.assert_allclose(image.array, image.raw / 65535.0, rtol=0, atol=1e-7)
    image8 = decode_image(corpus_bytes("ExplVR_BigEnd.dcm"))
    np.testing.assert_allclose(image8.array, image8.raw / 255.0, rtol=0, atol=1e-7)


def test_palette_colour_goes_through_the_colour_lut() -> None:
    image = decode_image(corpus_bytes("examples_palette.dcm"))
    ds = corpus_dataset("examples_palette.dcm")
    rgb = apply_color_lut(ds.pixel_array, ds)
    assert image.channels == 3
    np.testing.assert_array_equal(image.raw, np.moveaxis(rgb, 2, 0))
    np.testing.assert_allclose(image.array, image.raw / 65535.0, atol=1e-7)


def test_monochrome1_is_inverted() -> None:
    ds = corpus_dataset("MR_small.dcm")
    ds.PhotometricInterpretation = "MONOCHROME1"
    inverted = decode_image(to_bytes(ds))
    normal = decode_image(corpus_bytes("MR_small.dcm"))
    np.testing.assert_array_equal(inverted.raw, normal.raw)
    np.testing.assert_allclose(inverted.array, 1.0 - normal.array, atol=1e-7)


def test_voi_lut_sequence_wins_over_window() -> None:
    ds = corpus_dataset("CT_small.dcm")
    hu = _hu("CT_small.dcm").astype(np.int64)
    first, entries = int(hu.min()), 256
    table = (np.arange(entries) * 16).astype(np.uint16)  # 12-bit output LUT
    item = Dataset()
    item.add_new("LUTDescriptor", "SS", [entries, first, 12])  # SS: first value mapped is negative
    item.add_new("LUTData", "OW", table.tobytes())
    ds.VOILUTSequence = Sequence([item])
    ds.WindowCenter, ds.WindowWidth = 40, 400
    image = decode_image(to_bytes(ds))
    looked_up = table[np.clip(hu - first, 0, entries - 1)].astype(np.float64)
    expected = (looked_up - table.min()) / (table.max() - table.min())
    np.testing.assert_allclose(image.array[0], expected, atol=1e-6)


def test_multi_frame_needs_a_frame() -> None:
    data = corpus_bytes("examples_ybr_color.dcm")
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data)
    assert (info.value.status, info.value.code) == (422, "multi_frame")
    assert "30 frames" in info.value.detail
    for bad in (30, -1):
        with pytest.raises(ImageDecodeError) as info:
            decode_image(data, frame=bad)
        assert (info.value.status, info.value.code) == (422, "frame_out_of_range")


@pytest.mark.parametrize(("name", "frame"), [("examples_ybr_color.dcm", 7), ("SC_rgb_rle_2frame.dcm", 1)])
def test_chosen_frame_equals_pydicom_full_decode(name: str, frame: int) -> None:
    image = decode_image(corpus_bytes(name), frame=frame)
    expected = corpus_dataset(name).pixel_array[frame]
    np.testing.assert_array_equal(image.raw, np.moveaxis(expected, 2, 0))
    assert (image.frame, image.frames) == (frame, int(corpus_dataset(name).NumberOfFrames))


def test_single_frame_accepts_frame_zero_only() -> None:
    data = corpus_bytes("CT_small.dcm")
    assert decode_image(data, frame=0).frame is None
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, frame=1)
    assert info.value.status == 422


def test_enhanced_multi_frame_uses_functional_group_luts() -> None:
    """Legacy-converted enhanced CT: rescale per frame, window shared, in functional groups."""
    import highdicom as hd

    frames = []
    for i in range(3):
        ds = corpus_dataset("CT_small.dcm")
        ds.SOPInstanceUID = hd.UID()
        ds.InstanceNumber = i + 1
        position = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [position[0], position[1], position[2] + 5.0 * i]
        ds.RescaleIntercept = -1024 + 7 * i
        ds.WindowCenter, ds.WindowWidth = 40 + i, 400
        frames.append(ds)
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(frames, hd.UID(), 1, hd.UID(), 1)
    assert "RescaleIntercept" not in enhanced
    data = to_bytes(enhanced)
    for index, group in enumerate(enhanced.PerFrameFunctionalGroupsSequence):
        source_uid = group.ConversionSourceAttributesSequence[0].ReferencedSOPInstanceUID
        source = next(f for f in frames if f.SOPInstanceUID == source_uid)
        single = decode_image(to_bytes(source))
        image = decode_image(data, frame=index)
        np.testing.assert_array_equal(image.array, single.array)


def _with_transfer_syntax(uid: str) -> bytes:
    ds = corpus_dataset("MR_small.dcm")
    ds.PixelData = encapsulate([ds.PixelData])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = UID(uid)
    ds.set_original_encoding(False, True)
    return to_bytes(ds)


@pytest.mark.parametrize("uid", ["1.2.840.10008.1.2.4.100", "1.2.826.0.1.3680043.9.9999.1"])
def test_undecodable_transfer_syntax_is_415(uid: str) -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(_with_transfer_syntax(uid))
    assert (info.value.status, info.value.code) == (415, "unsupported_transfer_syntax")


def test_truncated_files_are_400() -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(corpus_bytes("MR_truncated.dcm"))
    assert (info.value.status, info.value.code) == (400, "dicom_truncated")
    whole = corpus_bytes("CT_small.dcm")
    for cut in (1000, len(whole) // 2):
        with pytest.raises(ImageDecodeError) as info:
            decode_image(whole[:cut])
        assert (info.value.status, info.value.code) == (400, "dicom_truncated"), cut


def test_truncated_compressed_pixel_data_is_400() -> None:
    whole = corpus_bytes("JPEG2000.dcm")
    with pytest.raises(ImageDecodeError) as info:
        decode_image(whole[: len(whole) - 2000])
    assert info.value.status == 400


def test_corrupt_compressed_stream_is_400() -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(corpus_bytes("JPEG2000-embedded-sequence-delimiter.dcm"))
    assert (info.value.status, info.value.code) == (400, "dicom_pixel_data_corrupt")


def test_dicom_without_pixels_is_422() -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(corpus_bytes("rtplan.dcm"))
    assert (info.value.status, info.value.code) == (422, "no_pixel_data")
    assert "RT Plan" in info.value.detail


def test_dicom_size_limits_checked_from_header() -> None:
    data = corpus_bytes("CT_small.dcm")
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, max_side=127)
    assert (info.value.status, info.value.code) == (413, "side_too_large")
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, max_pixels=128 * 128 - 1)
    assert (info.value.status, info.value.code) == (413, "too_many_pixels")
    # A header declaring 30000 x 30000 over a few bytes of JPEG 2000: refused before decoding.
    ds = corpus_dataset("JPEG2000.dcm")
    ds.Rows = ds.Columns = 30000
    with pytest.raises(ImageDecodeError) as info:
        decode_image(to_bytes(ds))
    assert info.value.status == 413


def test_dicom_without_preamble_is_sniffed() -> None:
    ds = corpus_dataset("CT_small.dcm")
    buffer_bytes = to_bytes(ds)
    bare = buffer_bytes[128 + 4 :]  # strip preamble and "DICM": meta group first
    image = decode_image(bare)
    np.testing.assert_array_equal(image.raw, decode_image(buffer_bytes).raw)


def test_reference_dataset_keeps_uids_and_drops_pixels_and_free_text() -> None:
    image = decode_image(corpus_bytes("CT_small.dcm"))
    ds = corpus_dataset("CT_small.dcm")
    ref = image.dicom
    assert ref is not None
    for keyword in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert ref[keyword].value == ds[keyword].value
    assert "PixelData" not in ref
    assert not any(element.tag.is_private for element in ref)
    assert len(ref) < len(ds) // 2
    assert ref.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
