"""STOW-RS (PS3.18 10.5): store the parts of a multipart/related body and answer the
application/dicom+json response (ReferencedSOPSequence, FailedSOPSequence with FailureReason).

Status: 200 when every instance was stored (a repeated SOPInstanceUID counts as stored), 202 when
some failed, 409 when none could be stored. Each failed item also carries a short ErrorComment
(0000,0902) saying why, without patient data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lrpseg.registry import Registry, RegistryError
from pacs.instances import CANNOT_UNDERSTAND, InstanceHeader, InstanceRefused, read_header, valid_uid
from pacs.intake import SeriesIntake
from pacs.receive import Receiver
from service.errors import ApiError
from service.multipart_related import Part, media_type, split_parts

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
MAX_PARTS = 4096
ERROR_COMMENT_LENGTH = 64  # LO


@dataclass(frozen=True)
class Outcome:
    header: InstanceHeader | None
    refused: InstanceRefused | None = None


def boundary_of(content_type: str | None) -> str:
    """The boundary of a `multipart/related; type="application/dicom"` body; 415 for any other type."""
    main, params = media_type(content_type or "")
    if main != "multipart/related" or media_type(params.get("type", ""))[0] != DICOM:
        raise ApiError(
            415,
            "Unsupported media type",
            'STOW-RS takes multipart/related; type="application/dicom" (DICOM Part 10 instances)',
            code="unsupported-media-type",
        )
    boundary = params.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise ApiError(
            400, "Bad request", "the multipart/related Content-Type has no boundary", code="malformed-multipart"
        )
    return boundary


def model_check(registry: Registry) -> Any:
    def known(model: str) -> str | None:
        try:
            registry.get(model)
        except RegistryError as exc:
            return f"model {model}: {exc}"[:200]
        return None

    return known


def store_parts(
    intake: SeriesIntake,
    registry: Registry,
    owner: str,
    body: bytes,
    boundary: str,
    model: str | None,
    study: str | None,
) -> list[Outcome]:
    """Each part into the intake, in order; one Outcome per part."""
    if study is not None and not valid_uid(study):
        raise ApiError(400, "Bad request", "the study in the URL is not a valid UID", code="invalid-uid")
    receiver = Receiver(intake, model_check(registry))
    outcomes = []
    for part in split_parts(body, boundary, MAX_PARTS):
        outcomes.append(_store(receiver, owner, part, model, study))
    return outcomes


def _store(receiver: Receiver, owner: str, part: Part, model: str | None, study: str | None) -> Outcome:
    if part.content_type not in ("", DICOM):
        return Outcome(
            None, InstanceRefused(CANNOT_UNDERSTAND, f"a part of type {part.content_type[:40]} is not DICOM")
        )
    try:
        header = read_header(part.data)
    except InstanceRefused as exc:
        return Outcome(None, exc)
    try:
        receiver.store(owner, header, part.data, model, study)
    except InstanceRefused as exc:
        return Outcome(header, exc)
    return Outcome(header)


def _uid(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]}


def response_body(outcomes: list[Outcome]) -> tuple[int, dict[str, Any]]:
    """The HTTP status and the STOW-RS response data set (DICOM JSON)."""
    stored: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for outcome in outcomes:
        item: dict[str, Any] = {}
        named = outcome.header or outcome.refused  # a refused instance's UIDs where they could be read
        if named is not None and named.sop_class:
            item["00081150"] = _uid(named.sop_class)
        if named is not None and named.sop_instance:
            item["00081155"] = _uid(named.sop_instance)
        if outcome.refused is None:
            stored.append(item)
        else:
            item["00081197"] = {"vr": "US", "Value": [outcome.refused.reason]}
            item["00000902"] = {"vr": "LO", "Value": [outcome.refused.detail[:ERROR_COMMENT_LENGTH]]}
            failed.append(item)
    body: dict[str, Any] = {}
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": stored}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    status = 200 if not failed else 202 if stored else 409
    return status, body
