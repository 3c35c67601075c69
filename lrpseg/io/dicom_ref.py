"""The reduced source dataset kept for DICOM outputs (no pixel data, no free text).

Only what a derived object (SEG, Parametric Map, Secondary Capture) needs to join the
source's patient and study and to reference the source instance and its geometry is
kept; everything else (private tags, overlays, descriptions, pixel data) is dropped.
Missing Type 2 patient/study attributes are added empty and malformed dates/times
blanked, because highdicom copies them and refuses non-conformant values.
"""

from __future__ import annotations

import copy

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.valuerep import DA, DT, TM

from lrpseg.io.quiet import quiet

__all__ = ["IMAGE_KEYWORDS", "PATIENT_STUDY_KEYWORDS", "reference_dataset", "source_frame"]

PATIENT_STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "PatientSpeciesDescription",
    "PatientSpeciesCodeSequence",
    "PatientBreedDescription",
    "PatientBreedCodeSequence",
    "BreedRegistrationSequence",
    "ResponsiblePerson",
    "ResponsiblePersonRole",
    "ResponsibleOrganization",
    "ClinicalTrialSponsorName",
    "ClinicalTrialProtocolID",
    "ClinicalTrialProtocolName",
    "ClinicalTrialSiteID",
    "ClinicalTrialSiteName",
    "ClinicalTrialSubjectID",
    "ClinicalTrialSubjectReadingID",
    "ClinicalTrialTimePointID",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "StudyDescription",
)

IMAGE_KEYWORDS = (
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "SeriesNumber",
    "InstanceNumber",
    "Modality",
    "ImageType",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PlanarConfiguration",
    "NumberOfFrames",
    "FrameIncrementPointer",
    "GridFrameOffsetVector",
    "PixelSpacing",
    "ImageOrientationPatient",
    "ImagePositionPatient",
    "SliceThickness",
    "SpacingBetweenSlices",
    "PatientOrientation",
    "Laterality",
    "ImageLaterality",
    "BodyPartExamined",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
    "DimensionOrganizationType",
    "ImageOrientationSlide",
    "TotalPixelMatrixRows",
    "TotalPixelMatrixColumns",
    "TotalPixelMatrixOriginSequence",
    "OpticalPathSequence",
    "ContainerIdentifier",
    "IssuerOfTheContainerIdentifierSequence",
    "ContainerTypeCodeSequence",
    "SpecimenDescriptionSequence",
    "LossyImageCompression",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
)

_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
_TEMPORAL = {"DA": DA, "TM": TM, "DT": DT}
_FRAME_ATTR = "_lrpseg_frame"


def reference_dataset(ds: Dataset, frame: int | None = None) -> Dataset:
    """Copy the attributes outputs need from ``ds``; idempotent.

    ``frame`` (0-based) records which frame of a multi-frame source was decoded; it is
    kept as a Python attribute, not a DICOM element, and read back by :func:`source_frame`.
    """
    ref = Dataset()
    with quiet():
        for keyword in (*IMAGE_KEYWORDS, *PATIENT_STUDY_KEYWORDS):
            if keyword in ds:
                element = copy.deepcopy(ds[keyword])  # converts raw elements, values validated
                ref.add(element)
        for keyword in _TYPE2:
            if keyword not in ref:
                setattr(ref, keyword, None)
        _blank_malformed_temporal(ref)
    meta = FileMetaDataset()
    source_meta = getattr(ds, "file_meta", None)
    if source_meta is not None and "TransferSyntaxUID" in source_meta:
        meta.TransferSyntaxUID = source_meta.TransferSyntaxUID
    ref.file_meta = meta
    recorded = frame if frame is not None else source_frame(ds)
    object.__setattr__(ref, _FRAME_ATTR, recorded)
    return ref


def source_frame(ds: Dataset) -> int | None:
    """The 0-based decoded frame recorded by :func:`reference_dataset`, if any."""
    value = ds.__dict__.get(_FRAME_ATTR)
    return int(value) if value is not None else None


def _blank_malformed_temporal(ref: Dataset) -> None:
    for element in ref:
        parse = _TEMPORAL.get(str(element.VR))
        if parse is None or element.VM != 1 or not element.value:
            continue
        try:
            parse(element.value)
        except (ValueError, TypeError, OverflowError):
            element.value = None
