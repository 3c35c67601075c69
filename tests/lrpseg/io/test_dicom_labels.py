"""How DICOM outputs label themselves (lrpseg.io.dicom_labels), on real highdicom objects read back."""

from __future__ import annotations

import io

import highdicom as hd
import numpy as np
import pydicom
import pytest

from lrpseg import __version__
from lrpseg.io import decode_image
from lrpseg.io.dicom_labels import OutputLabels
from lrpseg.io.dicom_out import segmentation_to_dicom_seg, series_relevance_to_dicom, series_segmentation_to_dicom_seg
from tests.lrpseg.io.corpus import corpus_bytes
from tests.service.pacs_series import make_series

MODEL = {"model_id": "unet-defects", "model_version": "1"}


@pytest.mark.parametrize(
    ("source_number", "offset", "base", "expected"),
    [("3", 1, 1000, 1031), ("3", 2, 1000, 1032), (None, 1, 1000, 1001), ("12", 1, 0, 121), ("x", 2, 500, 502)],
)
def test_series_number_is_base_plus_ten_times_the_source_plus_the_kind(
    source_number: str | None, offset: int, base: int, expected: int
) -> None:
    source = pydicom.Dataset()
    if source_number is not None:
        source.add_new("SeriesNumber", "IS" if source_number.isdigit() else "LO", source_number)
    assert OutputLabels("m", "1", series_base=base).series_number(source, offset) == expected


def test_research_use_marking_follows_the_model() -> None:
    ruo = OutputLabels("unet-defects", "1", "LRP conserving", notes=("outside the model's domain",))
    assert ruo.series_description("SEG") == "RUO SEG unet-defects@1 LRP conserving"
    assert ruo.comments("SEG") == (
        f"RESEARCH USE ONLY - not for diagnostic or clinical use. SEG by lrpseg {__version__}, model "
        "unet-defects@1 (LRP conserving). Warnings: outside the model's domain"
    )
    cleared = OutputLabels("unet-defects", "1", "segmentation", research_use_only=False)
    assert cleared.series_description("SEG") == "SEG unet-defects@1 segmentation"
    assert "RESEARCH" not in cleared.comments("SEG")
    assert len(OutputLabels("m" * 60, "1", "LRP epsilon-gamma-box").series_description("LRP")) == 64  # LO


def test_single_image_seg_carries_the_labels_and_reads_back_in_highdicom() -> None:
    image = decode_image(corpus_bytes("CT_small.dcm"))
    mask = np.zeros((image.height, image.width), bool)
    mask[10:20, 10:30] = True
    labels = OutputLabels("unet-defects", "1", "LRP ours", research_use_only=False, series_base=5000)
    data = segmentation_to_dicom_seg(image.dicom, {"defect": mask}, labels=labels, **MODEL)
    seg = hd.seg.segread(io.BytesIO(data))
    assert seg.SeriesNumber == 5000 + 10 * int(image.dicom.SeriesNumber) + 1
    assert seg.SeriesDescription == "SEG unet-defects@1 LRP ours" and not seg.ContentDescription.startswith("RUO")
    assert (seg.Manufacturer, seg.ManufacturerModelName, seg.ContentCreatorName) == ("lrpseg", "unet-defects", "LRPSEG")
    assert list(seg.SoftwareVersions) == [f"lrpseg {__version__}", "unet-defects@1"]


def test_series_outputs_reference_every_instance_frame_by_frame() -> None:
    source = make_series(5, size=32)
    volume = np.zeros((5, 32, 32), bool)
    volume[1:4, 8:16, 8:16] = True
    seg_bytes = series_segmentation_to_dicom_seg(
        source,
        {"defect": volume, "LRP mask (gmm)": volume},
        segment_algorithms={"LRP mask (gmm)": ("LRP conserving + gmm mask", __version__, "ClusterAnalysis")},
        **MODEL,
    )
    seg = hd.seg.segread(io.BytesIO(seg_bytes))
    uids = [str(ds.SOPInstanceUID) for ds in source]
    assert sorted(uid for _, _, uid in seg.get_source_image_uids()) == sorted(uids)
    gmm = seg.get_segment_description(2)
    assert gmm.SegmentAlgorithmName == "LRP conserving + gmm mask"
    assert gmm.algorithm_identification[0].AlgorithmFamilyCodeSequence[0].CodeMeaning == "Cluster Analysis"
    np.testing.assert_array_equal(seg.get_volume().array[..., 0] > 0, volume)  # slice order kept
    relevance = np.random.default_rng(0).normal(size=(5, 32, 32)).astype(np.float32)
    pm = pydicom.dcmread(io.BytesIO(series_relevance_to_dicom(source, relevance, **MODEL)))
    assert pm.NumberOfFrames == 5 and pm.SeriesNumber == 1000 + 10 * 3 + 2
    frames = [
        str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        for frame in pm.PerFrameFunctionalGroupsSequence
    ]
    assert sorted(frames) == sorted(uids)
    stored = pm.pixel_array.astype(np.float64)
    order = [uids.index(uid) for uid in frames]
    np.testing.assert_allclose(stored, relevance[order], rtol=1e-6)  # float pixel data, frame by frame
