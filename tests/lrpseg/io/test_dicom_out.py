"""DICOM SEG / Parametric Map / Secondary Capture outputs read back with pydicom and highdicom."""

from __future__ import annotations

import io

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import ParametricMapStorage, SecondaryCaptureImageStorage, SegmentationStorage

from lrpseg.io import DicomExportError, decode_image
from lrpseg.io.dicom_out import (
    PARAMETRIC_MAP,
    SECONDARY_CAPTURE,
    SEG,
    relevance_to_dicom,
    relevance_to_dicom_with_kind,
    render_relevance,
    segmentation_to_dicom_seg,
)
from tests.lrpseg.io.corpus import corpus_bytes, corpus_dataset, to_bytes

MODEL = {"model_id": "unet-defects", "model_version": "1.2.0"}


def _masks(height: int, width: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(10)
    return {
        "defect (U-Net)": rng.random((height, width)) > 0.7,
        "LRP mask (bmm)": rng.random((height, width)) > 0.9,
    }


def _source_refs(obj: pydicom.Dataset) -> list[pydicom.Dataset]:
    return [
        item
        for group in obj.PerFrameFunctionalGroupsSequence
        for derivation in group.DerivationImageSequence
        for item in derivation.SourceImageSequence
    ]


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_jpeg_ls_lossless.dcm", "SC_rgb_jpeg_dcmtk.dcm"])
def test_seg_reads_back_with_segments_algorithm_and_references(name: str) -> None:
    image = decode_image(corpus_bytes(name))
    source = corpus_dataset(name)
    masks = _masks(image.height, image.width)
    data = segmentation_to_dicom_seg(image.dicom, masks, series_number=901, **MODEL)
    assert isinstance(data, bytes) and data.kind == SEG and data[128:132] == b"DICM"
    seg = hd.seg.segread(io.BytesIO(data))
    assert seg.SOPClassUID == SegmentationStorage and seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.SeriesNumber == 901
    assert seg.SeriesInstanceUID != source.SeriesInstanceUID
    assert seg.PatientID == source.get("PatientID", "")
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert labels == list(masks)
    for segment in seg.SegmentSequence:
        algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("unet-defects", "1.2.0")
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
    assert referenced.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in _source_refs(seg)} == {source.SOPInstanceUID}
    for number, mask in enumerate(masks.values(), start=1):
        frames = [
            i
            for i, group in enumerate(seg.PerFrameFunctionalGroupsSequence)
            if group.SegmentIdentificationSequence[0].ReferencedSegmentNumber == number
        ]
        assert len(frames) == 1
        np.testing.assert_array_equal(seg.pixel_array[frames[0]].astype(bool), mask)


def test_seg_of_a_classic_multi_frame_points_at_the_decoded_frame() -> None:
    image = decode_image(corpus_bytes("examples_ybr_color.dcm"), frame=5)
    data = segmentation_to_dicom_seg(image.dicom, _masks(image.height, image.width), **MODEL)
    seg = pydicom.dcmread(io.BytesIO(data))
    refs = _source_refs(seg)
    assert refs and all(int(r.ReferencedFrameNumber) == 6 for r in refs)
    assert all(r.ReferencedSOPInstanceUID == image.dicom.SOPInstanceUID for r in refs)


def _enhanced_ct() -> pydicom.Dataset:
    frames = []
    for i in range(3):
        ds = corpus_dataset("CT_small.dcm")
        ds.SOPInstanceUID = hd.UID()
        position = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [position[0], position[1], position[2] + 5.0 * i]
        frames.append(ds)
    return hd.legacy.LegacyConvertedEnhancedCTImage(frames, hd.UID(), 1, hd.UID(), 1)


def test_enhanced_multi_frame_outputs_reference_the_frame_by_position() -> None:
    enhanced = _enhanced_ct()
    image = decode_image(to_bytes(enhanced), frame=1)
    seg = hd.seg.segread(io.BytesIO(segmentation_to_dicom_seg(image.dicom, _masks(128, 128), **MODEL)))
    assert {int(r.ReferencedFrameNumber) for r in _source_refs(seg)} == {2}
    pm_bytes = relevance_to_dicom(image.dicom, np.ones((128, 128), np.float32), **MODEL)
    assert pm_bytes.kind == PARAMETRIC_MAP
    assert {int(r.ReferencedFrameNumber) for r in _source_refs(pydicom.dcmread(io.BytesIO(pm_bytes)))} == {2}
    with pytest.raises(DicomExportError, match="frames"):
        segmentation_to_dicom_seg(enhanced, _masks(128, 128), **MODEL)  # full dataset, no frame given


def test_parametric_map_holds_the_float_relevance() -> None:
    image = decode_image(corpus_bytes("CT_small.dcm"))
    relevance = np.random.default_rng(11).normal(size=(128, 128)).astype(np.float32)
    data, kind = relevance_to_dicom_with_kind(image.dicom, relevance, **MODEL)
    assert kind == PARAMETRIC_MAP
    pm = pydicom.dcmread(io.BytesIO(data))
    assert pm.SOPClassUID == ParametricMapStorage
    assert (
        pm.StudyInstanceUID == image.dicom.StudyInstanceUID
        and pm.SeriesNumber == 1000 + 10 * int(image.dicom.SeriesNumber) + 2
    )  # base + 10 x source + 2
    np.testing.assert_array_equal(pm.pixel_array, relevance)
    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.LUTLabel == "LRP"
    assert mapping.DoubleFloatRealWorldValueFirstValueMapped == pytest.approx(float(relevance.min()))
    assert mapping.DoubleFloatRealWorldValueLastValueMapped == pytest.approx(float(relevance.max()))
    assert {r.ReferencedSOPInstanceUID for r in _source_refs(pm)} == {image.dicom.SOPInstanceUID}


def test_secondary_capture_fallback_when_no_frame_of_reference() -> None:
    image = decode_image(corpus_bytes("SC_rgb_jpeg_dcmtk.dcm"))
    assert "FrameOfReferenceUID" not in image.dicom
    relevance = np.linspace(-2, 1, image.height * image.width, dtype=np.float32).reshape(image.height, image.width)
    data = relevance_to_dicom(image.dicom, relevance, **MODEL)
    assert data.kind == SECONDARY_CAPTURE
    sc = pydicom.dcmread(io.BytesIO(data))
    assert sc.SOPClassUID == SecondaryCaptureImageStorage
    assert sc.StudyInstanceUID == image.dicom.StudyInstanceUID
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == image.dicom.SOPInstanceUID
    np.testing.assert_array_equal(sc.pixel_array, render_relevance(relevance))
    assert decode_image(bytes(data)).channels == 3  # our own decoder reads it back
    custom = np.zeros((image.height, image.width, 3), np.uint8)
    custom[..., 1] = 200
    sc2 = pydicom.dcmread(io.BytesIO(relevance_to_dicom(image.dicom, relevance, rendered=custom, **MODEL)))
    np.testing.assert_array_equal(sc2.pixel_array, custom)


def test_render_relevance_is_symmetric_around_white() -> None:
    picture = render_relevance(np.array([[-4.0, 0.0, 4.0]]))
    np.testing.assert_allclose(picture[0, 1], 255, atol=1)
    assert picture[0, 0, 2] > picture[0, 0, 0] and picture[0, 2, 0] > picture[0, 2, 2]


def test_output_arguments_are_validated() -> None:
    image = decode_image(corpus_bytes("CT_small.dcm"))
    ok = np.zeros((128, 128), bool)
    bad_cases = [
        ({"x": np.zeros((64, 64), bool)}, MODEL, "shape"),
        ({"x": np.full((128, 128), 0.5)}, MODEL, "boolean"),
        ({}, MODEL, "no masks"),
        ({"a" * 65: ok}, MODEL, "64 characters"),
        ({"x": ok}, {"model_id": "", "model_version": "1"}, "model_id"),
    ]
    for masks, model, message in bad_cases:
        with pytest.raises(DicomExportError, match=message):
            segmentation_to_dicom_seg(image.dicom, masks, **model)
    with pytest.raises(DicomExportError, match="NaN"):
        relevance_to_dicom(image.dicom, np.full((128, 128), np.nan), **MODEL)


def test_source_that_highdicom_refuses_gives_a_clear_error() -> None:
    image = decode_image(corpus_bytes("693_J2KI.dcm"))  # a CT without Frame of Reference UID
    with pytest.raises(DicomExportError, match="Frame Of Reference"):
        segmentation_to_dicom_seg(image.dicom, _masks(image.height, image.width), **MODEL)
    # the relevance still goes out, as a Secondary Capture
    assert relevance_to_dicom(image.dicom, np.zeros((image.height, image.width)), **MODEL).kind == SECONDARY_CAPTURE


def test_series_seg_has_a_frame_per_slice_referencing_its_instance() -> None:
    from lrpseg.io.dicom_out import series_segmentation_to_dicom_seg
    from tests.lrpseg.io.test_dicom_series import encode, series, zipped

    volume = decode_image(zipped({f"{i}.dcm": encode(ds) for i, (_, ds) in enumerate(series(4))}))
    assert volume.series is not None and len(volume.series) == 4
    rng = np.random.default_rng(0)
    masks = {"defect (m)": rng.random((4, 128, 128)) > 0.7, "LRP mask (bmm)": rng.random((4, 128, 128)) > 0.9}
    codes = {"defect (m)": (("SCT", "260787004", "Physical object"), ("99LRPSEG", "SURFDEF", "Surface defect"))}
    data = series_segmentation_to_dicom_seg(volume.series, masks, model_id="m", model_version="1", segment_codes=codes)
    seg = hd.seg.segread(io.BytesIO(data))
    uids = [str(ds.SOPInstanceUID) for ds in volume.series]
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=[1, 2])
    assert (pixels[..., 0].astype(bool) == masks["defect (m)"]).all()
    assert (pixels[..., 1].astype(bool) == masks["LRP mask (bmm)"]).all()
    first, second = seg.SegmentSequence
    assert first.SegmentedPropertyTypeCodeSequence[0].CodeValue == "SURFDEF"
    assert second.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Lesion"  # no codes given: the default
    assert str(seg.StudyInstanceUID) == str(volume.series[0].StudyInstanceUID)
    with pytest.raises(DicomExportError, match="the series is 4x128x128"):
        series_segmentation_to_dicom_seg(volume.series, {"x": masks["defect (m)"][:3]}, model_id="m", model_version="1")
