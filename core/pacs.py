"""Where DICOM results may go and come from: DICOMweb URLs against the allow-list, DIMSE AEs,
and the job meta that says where a job's results are sent (docs/pacs.md).

A job's meta `dicom_send` (core.dicom_send.send_meta) lists its destinations, each with the id of the delivery record
(core.deliveries) its job-end hook makes when the job finished with DICOM outputs:
    [{"kind": "dicomweb", "target": "http://pacs/dicom-web", "delivery_id": "..."},
     {"kind": "dimse", "target": "ORTHANC@pacs:4242", "delivery_id": "..."}]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from core.security import parse_host_rule

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
MAX_URL = 2048
AE_TITLE = re.compile(r"^[ -\[\]-~]{1,16}$")  # DICOM AE: 16 printable characters, no backslash
DICOM_ARTIFACTS = ("seg.dcm", "relevance.dcm")  # what is sent, in this order


@dataclass(frozen=True)
class AE:
    """A DICOM application entity: AE title, host, port."""

    title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.title}@{self.host}:{self.port}"


def parse_ae(text: str) -> AE:
    """`AET@host:port` (IPv6 hosts in brackets); ValueError saying what is wrong."""
    title, at, address = text.strip().rpartition("@")
    host, colon, port = address.rpartition(":")
    if not at or not colon or not title.strip():
        raise ValueError(f"{text!r} is not AET@host:port")
    if not AE_TITLE.match(title) or title != title.strip():
        raise ValueError(f"AE title {title!r} must be 1-16 printable characters without backslash or edge spaces")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"port {port!r} must be 1-65535")
    host = host.strip("[]")
    if not host:
        raise ValueError(f"{text!r} has no host")
    return AE(title, host, int(port))


def dicomweb_url_problem(url: str, allowed_hosts: list[str]) -> str | None:
    """Why a DICOMweb URL may not be used (None: it may). No DNS lookup: names match as names,
    IP literals by network, as for callbacks (core.security)."""
    if not allowed_hosts:
        return "DICOMweb is disabled on this server (the operator sets LRPSEG_DICOMWEB_ALLOWED_HOSTS)"
    if len(url) > MAX_URL:
        return f"longer than {MAX_URL} characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials (user:password@); the server's LRPSEG_DICOMWEB_* settings hold them"
    if parts.query or parts.fragment:
        return "must be a DICOMweb root URL without ?query or #fragment"
    host = (parts.hostname or "").lower()
    if not host:
        return "has no host"
    if port == 0:
        return "port 0 is not allowed"
    if not any(parse_host_rule(entry).allows(host) for entry in allowed_hosts):
        return f"host {host!r} is not in this server's dicomweb_allowed_hosts"
    return None


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
