"""Which model a received series goes to: the request's choice, else the first matching
LRPSEG_DICOM_ROUTES rule (case-insensitive globs on Modality, BodyPartExamined, SeriesDescription)."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from core.settings import DicomRoute
from pacs.instances import PROCESSING_FAILURE, InstanceRefused


def matches(route: DicomRoute, attributes: dict[str, str]) -> bool:
    return all(fnmatchcase(attributes.get(k, "").upper(), pattern.upper()) for k, pattern in route.match.items())


def route_model(routes: Sequence[DicomRoute], attributes: dict[str, str], requested: str | None = None) -> str:
    """The model for a series with these attributes; InstanceRefused when none is chosen."""
    if requested:
        return requested
    for route in routes:
        if matches(route, attributes):
            return route.model
    shown = ", ".join(f"{k}={attributes.get(k) or '(none)'}" for k in ("Modality", "BodyPartExamined"))
    raise InstanceRefused(
        PROCESSING_FAILURE, f"no model for this series: no routing rule matches ({shown}) and none was requested"
    )
