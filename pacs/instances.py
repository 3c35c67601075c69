"""What the intake reads from one received DICOM instance: its identity and what routing matches.

Only the header is parsed (pixel data is skipped here and decoded when the series becomes a job).
Instances must be DICOM Part 10 files (preamble + "DICM" + file meta), as STOW-RS requires and as
the SCP writes them. Nothing here is logged: the headers hold patient data.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

from pydicom import Dataset, dcmread

from lrpseg.io.quiet import quiet

# C-STORE / STOW-RS failure reasons (PS3.4 B.2.3, PS3.18 10.5.3)
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


class InstanceRefused(ValueError):
    """A received instance the intake does not take; `reason` is its DICOM failure status."""

    def __init__(self, reason: int, detail: str, sop_class: str = "", sop_instance: str = "") -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.sop_class = sop_class  # the instance's UIDs where they could be read (for the response)
        self.sop_instance = sop_instance


@dataclass(frozen=True)
class InstanceHeader:
    sop_class: str
    sop_instance: str
    study: str
    series: str
    attributes: dict[str, str]  # Modality, BodyPartExamined, SeriesDescription (routing)


def read_header(data: bytes) -> InstanceHeader:
    """The instance's UIDs and routing attributes; InstanceRefused for anything that is not a
    DICOM Part 10 image instance with valid UIDs."""
    if len(data) < 132 or data[128:132] != b"DICM":
        raise InstanceRefused(CANNOT_UNDERSTAND, "not a DICOM Part 10 file (no DICM prefix)")
    try:
        with quiet():  # pydicom's warnings can quote attribute values (patient data)
            ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
        uids = [_text(ds, k) for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")]
        attributes = {k: _text(ds, k) for k in ("Modality", "BodyPartExamined", "SeriesDescription")}
    except Exception:  # pydicom raises many kinds on malformed bytes: all are the sender's fault
        raise InstanceRefused(CANNOT_UNDERSTAND, "the DICOM data set could not be parsed") from None
    sop_class, sop_instance, study, series = uids
    for name, uid in zip(("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"), uids):
        if not valid_uid(uid):
            known = [u if valid_uid(u) else "" for u in (sop_class, sop_instance)]
            raise InstanceRefused(DOES_NOT_MATCH_SOP_CLASS, f"{name} is missing or not a valid UID", *known)
    return InstanceHeader(sop_class, sop_instance, study, series, attributes)


def valid_uid(uid: str) -> bool:
    return 0 < len(uid) <= 64 and _UID.fullmatch(uid) is not None


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip().rstrip("\0").strip()
