"""Where a job's DICOM results go: params.send checked against the settings, and the job meta
listing its destinations (core.pacs.SEND; the job-end hook turns them into deliveries)."""

from __future__ import annotations

import uuid

from core.pacs import DICOMWEB, DIMSE, dicomweb_url_problem, parse_ae
from core.settings import Settings
from schemas.params import JobParams


def send_problem(params: JobParams, settings: Settings) -> tuple[str, str] | None:
    """(field, why) when params.send asks for what this server cannot do; None when it can."""
    url = params.send.dicomweb
    if isinstance(url, str):
        problem = dicomweb_url_problem(url.strip(), settings.dicomweb_allowed_hosts)
        if problem:
            return "params.send.dicomweb", problem
    if params.send.dimse and settings.dimse_destination is None:
        return "params.send.dimse", "no DIMSE destination is configured on this server (LRPSEG_DIMSE_DESTINATION)"
    return None


def send_meta(params: JobParams, settings: Settings) -> list[dict[str, str]]:
    """The job's destinations (checked by `send_problem` first), each with a new delivery id."""
    targets: list[tuple[str, str]] = []
    url = params.send.dicomweb
    if isinstance(url, str):
        targets.append((DICOMWEB, url.strip()))
    elif url is None and settings.dicomweb_destination is not None:
        targets.append((DICOMWEB, settings.dicomweb_destination))
    if params.send.dimse is not False and settings.dimse_destination is not None:
        targets.append((DIMSE, str(parse_ae(settings.dimse_destination))))
    return [{"kind": kind, "target": target, "delivery_id": uuid.uuid4().hex} for kind, target in targets]
