"""The Orthanc fixture itself: it starts, stores an instance, and serves it back over DICOMweb."""

from __future__ import annotations

import io

import httpx
import pydicom
from pydicom.data import get_testdata_file

from tests.orthanc_server import OrthancServer


def test_orthanc_stores_and_serves_by_wado_rs(orthanc: OrthancServer) -> None:
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    buffer = io.BytesIO()
    source.save_as(buffer)
    orthanc.upload(buffer.getvalue())
    [instance] = orthanc.instance_ids()
    assert orthanc.instance_tags(instance)["SOPInstanceUID"] == source.SOPInstanceUID
    study = source.StudyInstanceUID
    found = httpx.get(f"{orthanc.dicomweb_url}/studies/{study}/series", timeout=10).json()
    assert found[0]["0020000E"]["Value"] == [source.SeriesInstanceUID]
    orthanc.clear()
    assert orthanc.instance_ids() == []


def test_orthanc_takes_peers_at_run_time(orthanc: OrthancServer) -> None:
    orthanc.add_modality("lrpseg-scp", "LRPSEG", 11112)
    orthanc.add_dicomweb_server("lrpseg-web", "http://127.0.0.1:8000/dicomweb/", {"Authorization": "Bearer x"})
    with orthanc.client() as http:
        assert "lrpseg-scp" in http.get("/modalities").json()
        assert "lrpseg-web" in http.get("/dicom-web/servers").json()
