"""A real PACS for tests: Debian's Orthanc with its DICOMweb plugin (`orthanc`, `orthanc-dicomweb`),
started on free loopback ports with a temporary configuration, one per test session.

Modalities (DIMSE peers) and DICOMweb servers are added at run time through Orthanc's REST API, so
each test names the lrpseg endpoints it started itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.redis_server import free_port

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
AE_TITLE = "ORTHANC"


def orthanc_available() -> bool:
    return Path(ORTHANC).exists() and DICOMWEB_PLUGIN.exists()


requires_orthanc = pytest.mark.skipif(
    not orthanc_available(), reason="Debian packages orthanc + orthanc-dicomweb not installed (.ci/run installs them)"
)


class OrthancServer:
    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root (QIDO/WADO/STOW-RS) that lrpseg's DICOMweb client talks to."""
        return f"{self.url}/dicom-web"

    def config(self) -> dict[str, Any]:
        storage = self.work_dir / "storage"
        return {
            "Name": "lrpseg-test-orthanc",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": AE_TITLE,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpTimeout": 30,
            "DicomScuTimeout": 10,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
            "DicomCheckModalityHost": False,
            "StableAge": 1,
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Servers": {}},
        }

    def start(self, timeout: float = 30.0) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.work_dir / "orthanc.json"
        config_path.write_text(json.dumps(self.config(), indent=2), encoding="utf-8")
        log = (self.work_dir / "orthanc.log").open("ab")
        self.proc = subprocess.Popen([ORTHANC, str(config_path)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/system", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not start on port {self.http_port}; see {self.work_dir}/orthanc.log")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0)

    def upload(self, dicom: bytes) -> str:
        """Stores one instance through the REST API; returns Orthanc's instance id."""
        with self.client() as http:
            answer = http.post("/instances", content=dicom, headers={"Content-Type": "application/dicom"})
            answer.raise_for_status()
            return str(answer.json()["ID"])

    def instance_ids(self) -> list[str]:
        with self.client() as http:
            return [str(item) for item in http.get("/instances").raise_for_status().json()]

    def instance_file(self, instance_id: str) -> bytes:
        with self.client() as http:
            return http.get(f"/instances/{instance_id}/file").raise_for_status().content

    def instance_tags(self, instance_id: str) -> dict[str, Any]:
        with self.client() as http:
            tags: dict[str, Any] = http.get(f"/instances/{instance_id}/simplified-tags").raise_for_status().json()
            return tags

    def add_modality(self, name: str, ae_title: str, port: int, host: str = "127.0.0.1") -> None:
        """Declares a DIMSE peer (e.g. lrpseg's C-STORE SCP) that Orthanc may send to."""
        with self.client() as http:
            http.put(f"/modalities/{name}", json={"AET": ae_title, "Host": host, "Port": port}).raise_for_status()

    def add_dicomweb_server(self, name: str, url: str, headers: dict[str, str] | None = None) -> None:
        """Declares a DICOMweb peer (e.g. lrpseg's STOW-RS endpoint) that Orthanc may send to."""
        body: dict[str, Any] = {"Url": url}
        if headers:
            body["HttpHeaders"] = headers
        with self.client() as http:
            http.put(f"/dicom-web/servers/{name}", json=body).raise_for_status()

    def clear(self) -> None:
        """Deletes every patient, so each test starts from an empty PACS."""
        with self.client() as http:
            for patient in http.get("/patients").raise_for_status().json():
                http.delete(f"/patients/{patient}").raise_for_status()
