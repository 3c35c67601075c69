"""DICOM outputs for DICOM inputs (highdicom): SEG for masks, Parametric Map for relevance.

Every output joins the source's patient and study, lives in a new series and references
the source instance (and, for a multi-frame source, the decoded frame). The source may
be ``decode_image(...).dicom`` (no pixel data needed) or any dataset of the source.

Multi-frame sources: an enhanced object (per-frame functional groups with plane
positions) is referenced through the decoded frame's plane position, which highdicom
resolves to the frame number. A classic multi-frame object (US, NM, XA, SC) is presented
to highdicom as the single decoded frame and the frame number is added to the source
references afterwards.

The relevance map goes into a Parametric Map (float pixel data, real-world value map
"LRP relevance"). Where the source cannot carry one (the IOD needs a Frame of Reference
the source lacks, or highdicom refuses the source's geometry) a Secondary Capture of the
rendered heatmap is written instead; the returned :class:`DicomBytes` says which.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Mapping, Sequence
from typing import Any

import highdicom as hd
import numpy as np
from matplotlib import colormaps
from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes

from lrpseg import __version__
from lrpseg.io.dicom_labels import RELEVANCE_OFFSET, SEG_OFFSET, OutputLabels
from lrpseg.io.dicom_ref import PATIENT_STUDY_KEYWORDS, reference_dataset, source_frame
from lrpseg.io.errors import DicomExportError
from lrpseg.io.quiet import quiet

__all__ = [
    "DEFAULT_SEGMENT_CODES",
    "PARAMETRIC_MAP",
    "SECONDARY_CAPTURE",
    "SEG",
    "Algorithm",
    "DicomBytes",
    "SegmentCodes",
    "relevance_to_dicom",
    "relevance_to_dicom_with_kind",
    "render_relevance",
    "segmentation_to_dicom_seg",
    "series_relevance_to_dicom",
    "series_segmentation_to_dicom_seg",
]

SEG = "seg"
PARAMETRIC_MAP = "parametric-map"
SECONDARY_CAPTURE = "secondary-capture"

_MANUFACTURER = "lrpseg"
_MAX_LO = 64
_BUILD_ERRORS = (ValueError, TypeError, AttributeError, KeyError, IndexError, RuntimeError)
_CLASSIC_FRAME_KEYWORDS = ("FrameIncrementPointer", "GridFrameOffsetVector")
_REQUIRED_SOURCE = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Rows", "Columns")


Triplet = tuple[str, str, str]  # (coding scheme designator, code value, code meaning)
SegmentCodes = tuple[Triplet, Triplet]  # (Segmented Property Category, Segmented Property Type)
Algorithm = tuple[
    str, str, str
]  # (algorithm name, version, family: a CID 7162 keyword such as "ArtificialIntelligence")
# A segment without declared codes: the generic pair PS3.16 CID 7150/7151 offer for "something abnormal".
DEFAULT_SEGMENT_CODES: SegmentCodes = (
    ("SCT", "49755003", "Morphologically Abnormal Structure"),
    ("SCT", "52988006", "Lesion"),
)


class DicomBytes(bytes):
    """Encoded DICOM file (Part 10, with preamble); ``kind`` is SEG, PARAMETRIC_MAP or
    SECONDARY_CAPTURE and ``sop_instance_uid`` the new instance's UID."""

    kind: str
    sop_instance_uid: str

    def __new__(cls, data: bytes, kind: str, sop_instance_uid: str) -> DicomBytes:
        obj = super().__new__(cls, data)
        obj.kind = kind
        obj.sop_instance_uid = sop_instance_uid
        return obj


def segmentation_to_dicom_seg(
    source: Dataset,
    masks: Mapping[str, np.ndarray],
    *,
    model_id: str,
    model_version: str,
    series_number: int | None = None,
    frame: int | None = None,
    segment_codes: Mapping[str, SegmentCodes] | None = None,
    segment_algorithms: Mapping[str, Algorithm] | None = None,
    labels: OutputLabels | None = None,
) -> DicomBytes:
    """A BINARY DICOM SEG with one segment per mask name, in the order given.

    ``masks`` maps a segment label (e.g. "defect (U-Net)", "LRP mask (bmm)") to a
    bool (H, W) array of the source's Rows x Columns. ``segment_codes`` maps a label to its
    (category, type) code triplets, the model's declared segment codes; labels not in it get
    :data:`DEFAULT_SEGMENT_CODES`. Algorithm identification is ``segment_algorithms[label]``,
    else ``model_id``/``model_version`` (family Artificial Intelligence). ``labels`` set the
    series number and description, research-use notice and equipment (lrpseg.io.dicom_labels;
    default: the model's, research use only); an explicit ``series_number`` wins.
    ``frame`` (0-based) defaults to the frame recorded by ``decode_image`` on its ``.dicom``;
    a multi-frame source needs one.
    """
    _check_lo("model_id", model_id)
    _check_lo("model_version", model_version)
    ref = reference_dataset(source)
    _check_source(ref)
    names, stack = _mask_stack(masks, int(ref.Rows), int(ref.Columns))
    descriptions = _descriptions(names, model_id, model_version, segment_codes, segment_algorithms)
    target = _FrameTarget(ref, frame)
    with quiet():
        try:
            seg = _binary_seg(
                [target.source],
                stack[np.newaxis],
                descriptions,
                model_id,
                model_version,
                plane_positions=target.plane_positions,
            )
        except _BUILD_ERRORS as exc:
            raise DicomExportError(f"cannot build a DICOM SEG for this source: {_reason(exc, ref)}") from None
        target.add_frame_references(seg)
        _label(seg, labels, model_id, model_version, "SEG", ref, SEG_OFFSET, series_number)
        return DicomBytes(_encode(seg), SEG, str(seg.SOPInstanceUID))


def _series_references(model_id: str, model_version: str, sources: Sequence[Dataset]) -> tuple[list[Dataset], int, int]:
    """The series' checked reference datasets (slice order) and their Rows, Columns."""
    _check_lo("model_id", model_id)
    _check_lo("model_version", model_version)
    refs = [reference_dataset(source) for source in sources]
    if not refs:
        raise DicomExportError("no source instances given")
    for ref in refs:
        _check_source(ref)
    return refs, int(refs[0].Rows), int(refs[0].Columns)


def series_segmentation_to_dicom_seg(
    sources: Sequence[Dataset],
    masks: Mapping[str, np.ndarray],
    *,
    model_id: str,
    model_version: str,
    series_number: int | None = None,
    segment_codes: Mapping[str, SegmentCodes] | None = None,
    segment_algorithms: Mapping[str, Algorithm] | None = None,
    labels: OutputLabels | None = None,
) -> DicomBytes:
    """A BINARY DICOM SEG of a volume decoded from a series: one frame per slice and segment,
    each referencing its source instance. ``sources`` are the slices' datasets in slice order
    (``decode_image(zip).series``); ``masks`` map labels to bool (D, Rows, Columns) volumes;
    ``segment_codes``, ``segment_algorithms`` and ``labels`` as for :func:`segmentation_to_dicom_seg`."""
    refs, rows, columns = _series_references(model_id, model_version, sources)
    bad = [label for label, mask in masks.items() if np.shape(mask) != (len(refs), rows, columns)]
    if bad:
        raise DicomExportError(
            f"mask {bad[0]!r} has shape {np.shape(masks[bad[0]])}; the series is {len(refs)}x{rows}x{columns}"
        )
    # each slice as its own (H, W) mask through the 2-D checks (labels, boolean values)
    slices = [{label: np.asarray(mask)[d] for label, mask in masks.items()} for d in range(len(refs))]
    names, _ = _mask_stack(slices[0], rows, columns)
    stacked = np.stack([_mask_stack(item, rows, columns)[1] for item in slices])  # (D, H, W, S)
    descriptions = _descriptions(names, model_id, model_version, segment_codes, segment_algorithms)
    with quiet():
        try:
            seg = _binary_seg(refs, stacked, descriptions, model_id, model_version)
        except _BUILD_ERRORS as exc:
            raise DicomExportError(f"cannot build a DICOM SEG for this series: {_reason(exc, refs[0])}") from None
        _tidy_pixel_measures(seg)
        _label(seg, labels, model_id, model_version, "SEG", refs[0], SEG_OFFSET, series_number)
        return DicomBytes(_encode(seg), SEG, str(seg.SOPInstanceUID))


def _binary_seg(
    sources: Sequence[Dataset],
    pixels: np.ndarray,
    descriptions: list[hd.seg.SegmentDescription],
    model_id: str,
    model_version: str,
    **extra: Any,
) -> hd.seg.Segmentation:
    """highdicom's BINARY Segmentation with lrpseg's series, labels and equipment."""
    return hd.seg.Segmentation(
        source_images=list(sources),
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=1,  # _label() sets the real one
        sop_instance_uid=hd.UID(),
        instance_number=1,
        omit_empty_frames=False,
        content_label="LRPSEG",
        content_description=f"Segmentation by {model_id} {model_version}"[:_MAX_LO],
        **extra,
        **_equipment(model_id, model_version),
    )


def _descriptions(
    labels: list[str],
    model_id: str,
    model_version: str,
    segment_codes: Mapping[str, SegmentCodes] | None,
    segment_algorithms: Mapping[str, Algorithm] | None = None,
) -> list[hd.seg.SegmentDescription]:
    """One segment description per label: the declared codes, else DEFAULT_SEGMENT_CODES; the
    declared algorithm, else the model (family Artificial Intelligence)."""
    declared = segment_codes or {}
    algorithms = segment_algorithms or {}
    descriptions = []
    for number, label in enumerate(labels, start=1):
        category, kind = declared.get(label, DEFAULT_SEGMENT_CODES)
        algorithm = _algorithm(*algorithms.get(label, (model_id, model_version, "ArtificialIntelligence")))
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=label,
                segmented_property_category=_concept(category),
                segmented_property_type=_concept(kind),
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
            )
        )
    return descriptions


def _algorithm(name: str, version: str, family: str) -> hd.AlgorithmIdentificationSequence:
    _check_lo("algorithm name", name)
    _check_lo("algorithm version", version)
    try:
        code = getattr(codes.cid7162, family)
    except AttributeError:
        raise DicomExportError(f"algorithm family {family!r} is not a CID 7162 keyword") from None
    return hd.AlgorithmIdentificationSequence(name=name, version=version, family=code)


def _label(
    obj: Dataset,
    labels: OutputLabels | None,
    model_id: str,
    model_version: str,
    what: str,
    source: Dataset,
    offset: int,
    series_number: int | None,
) -> None:
    """The job's labels (default: the model's, research use only); an explicit series number wins."""
    (labels or OutputLabels(model_id, model_version)).apply(obj, what, source, offset)
    if series_number is not None:
        obj.SeriesNumber = series_number


def _concept(triplet: Triplet) -> hd.sr.CodedConcept:
    scheme, value, meaning = triplet
    try:
        return hd.sr.CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)
    except _BUILD_ERRORS as exc:
        raise DicomExportError(f"segment code {triplet} is not a valid coded concept: {exc}") from None


def relevance_to_dicom(
    source: Dataset,
    relevance: np.ndarray,
    *,
    model_id: str,
    model_version: str,
    series_number: int | None = None,
    frame: int | None = None,
    rendered: np.ndarray | None = None,
    labels: OutputLabels | None = None,
) -> DicomBytes:
    """Parametric Map of ``relevance`` (float (H, W)), else a Secondary Capture.

    The returned bytes carry ``.kind`` (PARAMETRIC_MAP or SECONDARY_CAPTURE).
    ``rendered`` (uint8 (H, W, 3)) is the heatmap to store if the fallback is taken;
    by default :func:`render_relevance` draws one. ``labels`` as for :func:`segmentation_to_dicom_seg`.
    """
    _check_lo("model_id", model_id)
    _check_lo("model_version", model_version)
    ref = reference_dataset(source)
    _check_source(ref)
    values = _relevance_array(relevance, int(ref.Rows), int(ref.Columns))
    target = _FrameTarget(ref, frame)
    with quiet():
        try:
            pm = _parametric_map([target.source], values[np.newaxis], model_id, model_version, target.plane_positions)
        except _BUILD_ERRORS:
            pm = None
        if pm is not None:
            target.add_frame_references(pm)
            _label(pm, labels, model_id, model_version, "LRP", ref, RELEVANCE_OFFSET, series_number)
            return DicomBytes(_encode(pm), PARAMETRIC_MAP, str(pm.SOPInstanceUID))
        picture = render_relevance(values) if rendered is None else _check_rendered(rendered, values.shape)
        try:
            sc = _secondary_capture(ref, target, picture, model_id, model_version)
        except _BUILD_ERRORS as exc:
            raise DicomExportError(
                f"cannot build a Parametric Map or a Secondary Capture for this source: {_reason(exc, ref)}"
            ) from None
        _label(sc, labels, model_id, model_version, "LRP picture", ref, RELEVANCE_OFFSET, series_number)
        return DicomBytes(_encode(sc), SECONDARY_CAPTURE, str(sc.SOPInstanceUID))


def series_relevance_to_dicom(
    sources: Sequence[Dataset],
    relevance: np.ndarray,
    *,
    model_id: str,
    model_version: str,
    series_number: int | None = None,
    labels: OutputLabels | None = None,
) -> DicomBytes:
    """A Parametric Map of a volume's relevance (float (D, Rows, Columns)): one frame per slice,
    each referencing its source instance (``sources`` in slice order, as for
    :func:`series_segmentation_to_dicom_seg`). No Secondary Capture fallback: a source series
    highdicom cannot reference is a DicomExportError."""
    refs, rows, columns = _series_references(model_id, model_version, sources)
    if np.shape(relevance) != (len(refs), rows, columns):
        raise DicomExportError(f"relevance has shape {np.shape(relevance)}; the series is {len(refs)}x{rows}x{columns}")
    values = np.stack([_relevance_array(np.asarray(relevance)[d], rows, columns) for d in range(len(refs))])
    with quiet():
        try:
            pm = _parametric_map(refs, values, model_id, model_version, None)
        except _BUILD_ERRORS as exc:
            raise DicomExportError(f"cannot build a Parametric Map for this series: {_reason(exc, refs[0])}") from None
        _tidy_pixel_measures(pm)
        _label(pm, labels, model_id, model_version, "LRP", refs[0], RELEVANCE_OFFSET, series_number)
        return DicomBytes(_encode(pm), PARAMETRIC_MAP, str(pm.SOPInstanceUID))


def relevance_to_dicom_with_kind(source: Dataset, relevance: np.ndarray, **kwargs: object) -> tuple[bytes, str]:
    """:func:`relevance_to_dicom` returning ``(bytes, kind)``."""
    out = relevance_to_dicom(source, relevance, **kwargs)  # type: ignore[arg-type]
    return bytes(out), out.kind


def render_relevance(relevance: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) heatmap: R / max|R| on a diverging map (blue < 0 < red, 0 = white)."""
    peak = float(np.max(np.abs(relevance))) if relevance.size else 0.0
    scaled = relevance / peak if peak > 0 else np.zeros_like(relevance)
    rgba = colormaps["bwr"]((scaled + 1.0) / 2.0)
    return np.round(rgba[..., :3] * 255.0).astype(np.uint8)


class _FrameTarget:
    """The source as highdicom should see it, and how to point at the decoded frame."""

    def __init__(self, ref: Dataset, frame: int | None) -> None:
        frames = int(ref.get("NumberOfFrames") or 1)
        frame = source_frame(ref) if frame is None else frame
        self.source = ref
        self.plane_positions: list[hd.PlanePositionSequence] | None = None
        self.frame_number: int | None = None  # 1-based, added to references afterwards
        self.frame_index: int | None = None  # 0-based decoded frame of a multi-frame source
        if frames == 1:
            if frame not in (None, 0):
                raise DicomExportError(f"frame {frame} requested but the source has a single frame")
            return
        if frame is None or not 0 <= frame < frames:
            raise DicomExportError(f"the source has {frames} frames; pass the decoded frame (0..{frames - 1})")
        self.frame_index = frame
        position = _enhanced_plane_position(ref, frame)
        if position is not None:
            self.plane_positions = [position]
            return
        self.source = _single_frame_view(ref, frame)
        self.frame_number = frame + 1

    def add_frame_references(self, obj: Dataset) -> None:
        """Point source references at the decoded frame; tidy pixel measures."""
        _tidy_pixel_measures(obj)
        if self.frame_number is None:
            return
        uid = str(self.source.SOPInstanceUID)
        for item in _items_named(obj, "SourceImageSequence"):
            if str(item.get("ReferencedSOPInstanceUID", "")) == uid:
                item.ReferencedFrameNumber = self.frame_number


def _tidy_pixel_measures(obj: Dataset) -> None:
    """Drop pixel measures that are placeholders, or lack a slice thickness without a
    frame of reference (highdicom's own reader refuses those; they carry no geometry)."""
    for group in obj.get("SharedFunctionalGroupsSequence") or []:
        measures = group.get("PixelMeasuresSequence")
        if measures is None:
            continue
        empty = all(len(item) == 0 for item in measures)
        thin = "FrameOfReferenceUID" not in obj and not all("SliceThickness" in item for item in measures)
        if empty or thin:
            del group.PixelMeasuresSequence


def _enhanced_plane_position(ref: Dataset, frame: int) -> hd.PlanePositionSequence | None:
    per_frame = ref.get("PerFrameFunctionalGroupsSequence")
    if not per_frame or "FrameOfReferenceUID" not in ref or frame >= len(per_frame):
        return None
    groups = [per_frame[frame], *(ref.get("SharedFunctionalGroupsSequence") or [])]
    for group in groups:
        positions = group.get("PlanePositionSequence")
        if positions and "ImagePositionPatient" in positions[0]:
            return hd.PlanePositionSequence(
                coordinate_system=hd.CoordinateSystemNames.PATIENT,
                image_position=[float(v) for v in positions[0].ImagePositionPatient],
            )
    return None


def _single_frame_view(ref: Dataset, frame: int) -> Dataset:
    """A classic multi-frame source seen as its one decoded frame."""
    view = copy.deepcopy(ref)
    offsets = view.get("GridFrameOffsetVector")
    if offsets is not None and "ImagePositionPatient" in view and "ImageOrientationPatient" in view:
        orientation = np.asarray([float(v) for v in view.ImageOrientationPatient])
        normal = np.cross(orientation[:3], orientation[3:])
        origin = np.asarray([float(v) for v in view.ImagePositionPatient])
        view.ImagePositionPatient = [float(v) for v in origin + float(offsets[frame]) * normal]
    for keyword in _CLASSIC_FRAME_KEYWORDS:
        if keyword in view:
            del view[keyword]
    view.NumberOfFrames = 1
    if "SharedFunctionalGroupsSequence" not in view:
        # highdicom reads pixel measures of any multi-frame IOD from the shared groups
        measures = Dataset()
        if "PixelSpacing" in view:
            measures.PixelSpacing = view.PixelSpacing
        shared = Dataset()
        shared.PixelMeasuresSequence = DicomSequence([measures])
        view.SharedFunctionalGroupsSequence = DicomSequence([shared])
    return view


def _parametric_map(
    sources: list[Dataset],
    values: np.ndarray,
    model_id: str,
    model_version: str,
    plane_positions: list[hd.PlanePositionSequence] | None,
) -> hd.pm.ParametricMap:
    """float32 (frames, H, W) relevance over ``sources`` (one per frame, or one for a single frame)."""
    low, high = float(values.min()), float(values.max())
    peak = max(abs(low), abs(high))
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="LRP",
        lut_explanation=f"LRP relevance ({model_id} {model_version})"[:_MAX_LO],
        unit=codes.UCUM.NoUnits,
        value_range=(low, high if high > low else low + 1.0),
        slope=1,
        intercept=0,
    )
    return hd.pm.ParametricMap(
        source_images=sources,
        pixel_array=values,
        series_instance_uid=hd.UID(),
        series_number=1,  # _label() sets the real one
        sop_instance_uid=hd.UID(),
        instance_number=1,
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        window_center=0.0,
        window_width=2.0 * peak if peak > 0 else 1.0,
        content_label="LRP",
        content_description=f"LRP relevance by {model_id} {model_version}"[:_MAX_LO],
        plane_positions=plane_positions,
        **_equipment(model_id, model_version),
    )


def _secondary_capture(
    ref: Dataset,
    target: _FrameTarget,
    picture: np.ndarray,
    model_id: str,
    model_version: str,
) -> hd.sc.SCImage:
    orientation = _patient_orientation(ref)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=ref,
        pixel_array=picture,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=hd.UID(),
        series_number=1,  # _label() sets the real one
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=_MANUFACTURER,
        patient_orientation=orientation or ("A", "F"),
        transfer_syntax_uid=hd.UID("1.2.840.10008.1.2.1"),
    )
    if orientation is None:
        sc.PatientOrientation = None  # Type 2: unknown, left empty
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.BurnedInAnnotation = "NO"
    sc.DerivationDescription = f"LRP relevance heatmap by {model_id} {model_version}"[:1024]
    reference = Dataset()
    reference.ReferencedSOPClassUID = ref.SOPClassUID
    reference.ReferencedSOPInstanceUID = ref.SOPInstanceUID
    if target.frame_index is not None:
        reference.ReferencedFrameNumber = target.frame_index + 1
    sc.SourceImageSequence = DicomSequence([reference])
    return sc


def _patient_orientation(ref: Dataset) -> tuple[str, str] | None:
    """Row/column direction letters, from Patient Orientation or Image Orientation (Patient)."""
    letters = {"A", "P", "L", "R", "H", "F"}
    given = ref.get("PatientOrientation")
    if given is not None and len(given) == 2 and all(v and v[0] in letters for v in given):
        return str(given[0])[0], str(given[1])[0]
    iop = ref.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return None
    names = (("R", "L"), ("A", "P"), ("F", "H"))  # negative, positive direction per axis
    result = []
    for vector in (iop[:3], iop[3:]):
        axis = int(np.argmax(np.abs([float(v) for v in vector])))
        result.append(names[axis][1] if float(vector[axis]) > 0 else names[axis][0])
    return result[0], result[1]


def _reason(exc: Exception, ref: Dataset) -> str:
    """highdicom's message, unless it quotes any patient/study value of the source."""
    message = " ".join(str(exc).split())[:300]
    quoted = [str(ref.get(k)) for k in PATIENT_STUDY_KEYWORDS if k in ref and ref.get(k) is not None]
    if not message or any(len(value) >= 2 and value in message for value in quoted):
        return f"{type(exc).__name__} in highdicom"
    return message


def _check_source(ref: Dataset) -> None:
    missing = [k for k in _REQUIRED_SOURCE if not ref.get(k)]
    if missing:
        raise DicomExportError(f"the source lacks {', '.join(missing)}; a derived object must reference them")


def _equipment(model_id: str, model_version: str) -> dict[str, str]:
    return {
        "manufacturer": _MANUFACTURER,
        "manufacturer_model_name": model_id,
        "software_versions": f"lrpseg {__version__}",
        "device_serial_number": f"{model_id}@{model_version}"[:_MAX_LO],
    }


def _mask_stack(masks: Mapping[str, np.ndarray], rows: int, columns: int) -> tuple[list[str], np.ndarray]:
    """Validate labels and masks; return labels and a bool (H, W, S) stack."""
    if not masks:
        raise DicomExportError("no masks given; a DICOM SEG needs at least one segment")
    labels, layers = [], []
    for label, mask in masks.items():
        _check_lo("segment label", label)
        array = np.asarray(mask)
        if array.shape != (rows, columns):
            raise DicomExportError(f"mask {label!r} has shape {array.shape}; the source image is {rows}x{columns}")
        if array.dtype != np.bool_:
            if array.dtype.kind not in "iu" or not np.isin(array, (0, 1)).all():
                raise DicomExportError(f"mask {label!r} must be boolean (or 0/1 integers), got {array.dtype}")
            array = array.astype(bool)
        labels.append(label)
        layers.append(array)
    return labels, np.stack(layers, axis=-1)


def _relevance_array(relevance: np.ndarray, rows: int, columns: int) -> np.ndarray:
    values = np.asarray(relevance)
    if values.shape != (rows, columns):
        raise DicomExportError(f"relevance has shape {values.shape}; the source image is {rows}x{columns}")
    if values.dtype.kind not in "fiu":
        raise DicomExportError(f"relevance must be numeric, got {values.dtype}")
    values = values.astype(np.float32)
    if not np.all(np.isfinite(values)):
        raise DicomExportError("relevance contains NaN or infinite values")
    return values


def _check_rendered(rendered: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    picture = np.asarray(rendered)
    if picture.shape != (*shape, 3) or picture.dtype != np.uint8:
        raise DicomExportError(f"rendered heatmap must be uint8 {(*shape, 3)}, got {picture.dtype} {picture.shape}")
    return picture


def _check_lo(what: str, value: str) -> None:
    """DICOM LO: 1..64 characters, no backslash or control characters."""
    if not isinstance(value, str) or not value.strip():
        raise DicomExportError(f"{what} must be a non-empty string")
    if len(value) > _MAX_LO or "\\" in value or any(ord(c) < 32 for c in value):
        raise DicomExportError(f"{what} must be at most 64 characters without backslash or control characters")


def _items_named(obj: Dataset, keyword: str) -> list[Dataset]:
    """All items of every sequence called ``keyword``, at any depth."""
    found: list[Dataset] = []
    for element in obj:
        if element.VR != "SQ":
            continue
        for item in element.value:
            if element.keyword == keyword:
                found.append(item)
            found.extend(_items_named(item, keyword))
    return found


def _encode(obj: Dataset) -> bytes:
    buffer = io.BytesIO()
    obj.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
