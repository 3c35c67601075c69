"""Pull mode: a job's series fetched from a DICOMweb server by WADO-RS (dicomweb-client).

The instances are zipped as an uploaded series would be and go through the one input path
(lrpseg.inputs), so a pulled series is decoded, limited and checked exactly like a sent one.
The URL is checked against the allow-list again here (the worker's settings rule); redirects
are not followed (they could lead past the allow-list); no proxy from the environment.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import requests
from dicomweb_client import DICOMwebClient
from pydicom import Dataset

from core.pacs import dicomweb_url_problem
from core.settings import Settings
from lrpseg.inputs import InputError, RawInput
from lrpseg.io.quiet import quiet
from schemas.params import DicomwebSource

SERIES_ZIP = "application/zip"


class SourceUnavailable(RuntimeError):
    """The PACS could not be asked (connection, timeout, HTTP error): not the caller's input."""


class _Session(requests.Session):
    """Every request with a timeout, no redirects, no proxy from the environment."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.trust_env = False
        self.max_redirects = 0
        self.timeout = timeout

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        kwargs["allow_redirects"] = False
        return super().request(*args, **kwargs)


def auth_headers(settings: Settings) -> dict[str, str]:
    """Authorization for DICOMweb servers: a Bearer token, else HTTP Basic, else none."""
    if settings.dicomweb_token is not None:
        return {"Authorization": f"Bearer {settings.dicomweb_token.get_secret_value()}"}
    if settings.dicomweb_username is not None:
        import base64

        password = settings.dicomweb_password.get_secret_value() if settings.dicomweb_password else ""
        token = base64.b64encode(f"{settings.dicomweb_username}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}
    return {}


def fetch_series(source: DicomwebSource, settings: Settings) -> RawInput:
    """The series as a zip of its instances; InputError for what the caller got wrong (host not
    allowed, empty series, too large), SourceUnavailable when the server cannot be asked."""
    url = source.url.strip()
    problem = dicomweb_url_problem(url, settings.dicomweb_allowed_hosts)
    if problem:
        raise InputError("params.source.dicomweb.url", problem)
    session = _Session(settings.dicom_send_timeout)
    client = DICOMwebClient(url, session=session, headers=auth_headers(settings), timeout=settings.dicom_send_timeout)
    try:
        with quiet():  # pydicom's warnings quote values (PatientName...): never in the logs
            datasets = client.retrieve_series(source.study, source.series)
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status == 404:
            raise InputError("params.source.dicomweb", "the DICOMweb server has no such series") from None
        raise SourceUnavailable(f"the DICOMweb server answered HTTP {status} to WADO-RS") from None
    except (requests.RequestException, OSError) as exc:
        raise SourceUnavailable(f"the DICOMweb server could not be reached ({type(exc).__name__})") from None
    finally:
        session.close()
    if not datasets:
        raise InputError("params.source.dicomweb", "the series holds no instances")
    with quiet():
        archive = zip_series(datasets, settings.max_upload_bytes)
    return RawInput(archive, "series.zip", SERIES_ZIP)


def zip_series(datasets: list[Dataset], limit: int) -> bytes:
    """The instances as a zip (stored, one .dcm each); 413 past `limit` bytes, as an upload would be."""
    buffer = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for n, ds in enumerate(datasets):
            part = io.BytesIO()
            ds.save_as(part, enforce_file_format=True)
            total += part.tell()
            if total > limit:
                raise InputError("params.source.dicomweb", f"the series exceeds {limit} bytes", status=413)
            archive.writestr(f"{n:05d}.dcm", part.getvalue())
    return buffer.getvalue()
