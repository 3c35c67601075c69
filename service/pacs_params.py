"""The PACS parts of a submission: params.send (where results go) and params.source (pull mode),
checked against this server's allow-list before anything is queued (422 naming the field).

A pull job has no image part: its upload is the source reference itself (JSON, media type
PULL_MEDIA_TYPE), kept sealed like any upload; the worker fetches the series by WADO-RS
(workers.pull) and decodes it as an uploaded series zip would be.
"""

from __future__ import annotations

import json

from core.dicom_send import send_problem
from core.pacs import dicomweb_url_problem
from core.settings import Settings
from core.store import Upload
from schemas.params import JobParams
from schemas.problems import FieldError
from service.errors import ApiError

PULL_MEDIA_TYPE = "application/vnd.lrpseg.dicomweb-source+json"


def invalid(field: str, message: str) -> ApiError:
    return ApiError(
        422,
        "Invalid parameters",
        f"{field}: {message}",
        code="invalid-params",
        errors=[FieldError(field=field, message=message)],
    )


def check_pacs_params(params: JobParams, settings: Settings) -> None:
    """params.send and params.source against the settings, or 422 naming the field."""
    problem = send_problem(params, settings)
    if problem is not None:
        raise invalid(*problem)
    if params.source is not None:
        why = dicomweb_url_problem(params.source.dicomweb.url.strip(), settings.dicomweb_allowed_hosts)
        if why:
            raise invalid("params.source.dicomweb.url", why)


def pull_upload(params: JobParams) -> Upload:
    """The upload of a job without an image part: its source reference, or 422 when it has none."""
    if params.source is None:
        raise ApiError(
            422,
            "Invalid input",
            "image: send an image part, or params.source.dicomweb to have the series fetched from a PACS",
            code="invalid-input",
            errors=[FieldError(field="image", message="required unless params.source is given")],
        )
    reference = params.source.model_dump(mode="json")
    return Upload(json.dumps(reference, sort_keys=True).encode(), "dicomweb-source.json", PULL_MEDIA_TYPE)


def check_pull_upload(params: JobParams, upload: Upload) -> None:
    """An image part and params.source together are refused: one source per job."""
    if params.source is not None and upload != pull_upload(params):
        raise invalid("params.source", "send an image part or params.source, not both")
