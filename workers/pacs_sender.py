"""Sending a finished job's DICOM results (seg.dcm, relevance.dcm) to a PACS: STOW-RS to a
DICOMweb root, or C-STORE to an AE (pynetdicom SCU). The deliverer (workers.deliverer) claims
the records, calls `PacsSender.send` and settles them with the callbacks' retries and backoff.

STOW-RS goes through the deliverer's deadline-bound httpx client (no redirects, no proxy from
the environment, the whole send within `dicom_send_timeout`); a C-STORE association uses the
same number for its connection, ACSE, DIMSE and network timeouts.
"""

from __future__ import annotations

import io
import json
import uuid
from dataclasses import dataclass

import httpx
import pydicom
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from core.deliveries import Delivery
from core.pacs import DICOM_ARTIFACTS, DICOMWEB, parse_ae
from core.settings import Settings
from core.store import Store
from workers.pull import auth_headers

FAILED_SOP_SEQUENCE = "00081198"
STORE_OK = {0x0000, 0xB000, 0xB006, 0xB007}  # success, and the warnings that still store the instance


@dataclass(frozen=True)
class Outcome:
    """How one attempt went: delivered, or why not (`final`: retrying cannot help)."""

    delivered: bool
    status_code: int | None = None
    error: str | None = None
    final: bool = False


class PacsSender:
    def __init__(self, settings: Settings, store: Store | None, client: httpx.Client) -> None:
        self.settings = settings
        self.store = store
        self.client = client

    def send(self, delivery: Delivery) -> Outcome:
        files = self.results(delivery)
        if not files:
            return Outcome(False, error="the job's DICOM results are gone (deleted or expired)", final=True)
        if delivery.kind == DICOMWEB:
            return self.stow(delivery.url, files)
        return self.c_store(delivery.url, files)

    def results(self, delivery: Delivery) -> list[bytes]:
        """The job's DICOM artifacts, SEG first; [] when the job (or its store) has none left."""
        if self.store is None:
            return []
        try:
            job_id = str(json.loads(delivery.body)["job_id"])
        except (ValueError, KeyError, TypeError):
            return []
        found = (self.store.get_artifact(job_id, name) for name in DICOM_ARTIFACTS)
        return [data for data in found if data]

    def stow(self, root: str, files: list[bytes]) -> Outcome:
        """STOW-RS: POST {root}/studies, multipart/related; type="application/dicom"."""
        boundary = uuid.uuid4().hex
        body = b"".join(
            b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n"
            for data in files
        )
        body += b"--" + boundary.encode() + b"--\r\n"
        headers = {
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
            **auth_headers(self.settings),
        }
        try:
            response = self.client.post(root.rstrip("/") + "/studies", content=body, headers=headers)
        except httpx.TimeoutException:
            return Outcome(False, error=f"no answer within {self.settings.dicom_send_timeout:g} s")
        except httpx.HTTPError as exc:
            return Outcome(False, error=f"STOW-RS failed ({type(exc).__name__})")
        status = response.status_code
        failed = failed_instances(response)
        if status in (200, 202) and not failed:  # 202 without failures: stored, with warnings (PS3.18)
            return Outcome(True, status)
        if failed:
            return Outcome(False, status, f"the PACS refused {failed} of {len(files)} instances (HTTP {status})")
        return Outcome(False, status, f"HTTP {status}")

    def c_store(self, address: str, files: list[bytes]) -> Outcome:
        """C-STORE every result over one association to `AET@host:port`."""
        target = parse_ae(address)
        datasets = [pydicom.dcmread(io.BytesIO(data)) for data in files]
        timeout = self.settings.dicom_send_timeout
        ae = AE(ae_title=self.settings.dimse_ae_title)  # our one AE title, the SCP's too
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
        for sop_class in dict.fromkeys(str(ds.SOPClassUID) for ds in datasets):
            ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        assoc = ae.associate(target.host, target.port, ae_title=target.title)
        if not assoc.is_established:
            why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
            return Outcome(False, error=f"association with {target.title} {why}")
        try:
            for n, ds in enumerate(datasets, start=1):
                status = store_status(assoc.send_c_store(ds))
                if status not in STORE_OK:
                    text = "no answer" if status is None else f"status 0x{status:04X}"
                    return Outcome(False, error=f"C-STORE of instance {n} of {len(datasets)}: {text}")
        finally:
            if assoc.is_established:
                assoc.release()
        return Outcome(True)


def store_status(answer: Dataset) -> int | None:
    """The Status of a C-STORE response (None when the peer did not answer)."""
    value = answer.get("Status") if answer is not None else None
    return int(value) if value is not None else None


def failed_instances(response: httpx.Response) -> int:
    """How many instances a STOW-RS response lists in FailedSOPSequence (0 when it cannot say)."""
    try:
        answer = response.json()
    except ValueError:
        return 0
    if not isinstance(answer, dict):
        return 0
    failed = (answer.get(FAILED_SOP_SEQUENCE) or {}).get("Value") or []
    return len(failed) if isinstance(failed, list) else 0
