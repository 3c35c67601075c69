"""PACS peers: what a job's meta says about where its DICOM results are sent (docs/pacs.md).
The DICOMweb URL and AE rules live in core.security (the settings read them at start-up).

A job's meta `dicom_send` (core.dicom_send.send_meta) lists its destinations, each with the id
of the delivery record (core.deliveries) its job-end hook makes when the job finished with
DICOM outputs:
    [{"kind": "dicomweb", "target": "http://pacs/dicom-web", "delivery_id": "..."},
     {"kind": "dimse", "target": "ORTHANC@pacs:4242", "delivery_id": "..."}]
"""

from __future__ import annotations

from typing import Any

from core.security import AE, dicomweb_url_problem, parse_ae

__all__ = [
    "AE",
    "DICOMWEB",
    "DICOM_ARTIFACTS",
    "DIMSE",
    "SEND",
    "dicomweb_url_problem",
    "parse_ae",
    "send_targets",
]

SEND = "dicom_send"  # job.meta key
DICOMWEB = "dicomweb"
DIMSE = "dimse"
DICOM_ARTIFACTS = ("seg.dcm", "relevance.dcm")  # what is sent, in this order


def send_targets(meta: dict[str, Any]) -> list[dict[str, str]]:
    """The job's destinations from its meta (malformed entries skipped)."""
    value = meta.get(SEND)
    if not isinstance(value, list):
        return []
    return [
        item
        for item in value
        if isinstance(item, dict) and item.get("kind") in (DICOMWEB, DIMSE) and item.get("delivery_id")
    ]
