"""The round trip a hospital runs, against a real Orthanc: Orthanc holds a study and sends it to
lrpseg (by its DICOMweb peer, STOW-RS; or by C-STORE to `lrpseg dimse`), a routing rule on
Modality sends the series to the shipped 2-D model, a real RQ worker explains it as one series job,
and the deliverer puts the labelled SEG and relevance Parametric Map back into the same Orthanc (by
STOW-RS, or by C-STORE). Orthanc then holds one new SEG series and one new map for the source."""

from __future__ import annotations

import io

import highdicom as hd
import httpx
import pydicom
import pytest
import redis
from pydicom.uid import ParametricMapStorage, SegmentationStorage

from core.settings import DicomRoute, Settings
from lrpseg.registry import Registry
from lrpseg.registry.catalog import DEFAULT_MODEL, SHIPPED_DIR
from pacs.intake import SeriesIntake
from pacs.receive import Receiver
from pacs.scp import start
from tests.orthanc_server import OrthancServer
from tests.pacs import round_trip
from tests.service.pacs_series import make_series

SLICES = 6


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry([SHIPPED_DIR], default=DEFAULT_MODEL)


@pytest.fixture(params=[round_trip.STOW, round_trip.C_STORE])
def way(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def hospital(hospital: Settings, orthanc: OrthancServer, way: str) -> Settings:
    """The hospital's settings (keys on), surface photographs (OT) routed to the shipped U-Net, and
    results sent back the way the study came: STOW-RS to Orthanc's DICOMweb root, or C-STORE to its AE."""
    destination = (
        {"dicomweb_destination": orthanc.dicomweb_url}
        if way == round_trip.STOW
        else {"dimse_destination": f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"}
    )
    return hospital.model_copy(
        update={
            "dicom_routes": [DicomRoute(match={"Modality": "OT"}, model=DEFAULT_MODEL)],
            "dicomweb_allowed_hosts": ["127.0.0.1"],
            "callback_poll": 0.05,
            "dicom_send_timeout": 10.0,
            **destination,
        }
    )


def test_orthanc_study_to_lrpseg_and_its_seg_back_into_orthanc(
    orthanc: OrthancServer,
    lrpseg_url: str,
    hospital: Settings,
    registry: Registry,
    redis_conn: redis.Redis,
    way: str,
) -> None:
    from workers.worker import build_worker

    source = make_series(SLICES, 64, modality="OT")
    uids = {str(ds.SOPInstanceUID) for ds in source}
    study = round_trip.store_in(orthanc, source)
    scp = start(hospital, Receiver(SeriesIntake(redis_conn, hospital)), port=0)
    try:
        round_trip.connect(orthanc, way, lrpseg_url, round_trip.HEADERS, hospital.dimse_ae_title, scp.server_address[1])
        round_trip.send(orthanc, way, study)
    finally:
        scp.shutdown()
    job_id = round_trip.job_of(lrpseg_url, str(source[0].SeriesInstanceUID), round_trip.HEADERS)
    worker = build_worker(hospital, connection=redis_conn, registry=registry, name=None, heartbeat=False)
    assert worker.work(burst=True, logging_level="WARNING")
    with round_trip.deliverer(redis_conn, hospital):
        view = round_trip.delivered(lrpseg_url, job_id, round_trip.HEADERS)

    assert view["status"] == "finished", view
    assert view["result"]["model"]["id"] == DEFAULT_MODEL
    assert (view["result"]["input"]["format"], view["result"]["input"]["depth"]) == ("dicom-series", SLICES)
    kind = "dicomweb" if way == round_trip.STOW else "dimse"
    assert [(d["kind"], d["status"], d["attempts"]) for d in view["deliveries"]] == [(kind, "delivered", 1)]
    assert len(redis_conn.keys("lrpseg-test:record:*")) == 1  # one series, one job

    series = round_trip.series_in_study(orthanc, study)
    new = {uid: classes for uid, classes in series.items() if uid != source[0].SeriesInstanceUID}
    assert sorted(new.values()) == sorted([[SegmentationStorage], [ParametricMapStorage]]), (
        new
    )  # one SEG, one map: no more
    assert len(series[str(source[0].SeriesInstanceUID)]) == SLICES

    stored = {classes[0]: only_instance(orthanc, uid) for uid, classes in new.items()}
    relevance = pydicom.dcmread(io.BytesIO(stored[ParametricMapStorage]))
    assert relevance.SeriesDescription == f"RUO LRP {DEFAULT_MODEL} LRP conserving-reference"
    assert relevance.NumberOfFrames == SLICES and relevance.SeriesNumber == 1000 + 10 * 3 + 2
    seg = hd.seg.segread(io.BytesIO(stored[SegmentationStorage]))
    assert {uid for _, _, uid in seg.get_source_image_uids()} == uids  # references every source instance
    referenced = {
        str(item.ReferencedSOPInstanceUID)
        for frame in seg.PerFrameFunctionalGroupsSequence
        for derivation in frame.DerivationImageSequence
        for item in derivation.SourceImageSequence
    }
    assert referenced == uids  # and every frame names its slice
    assert seg.NumberOfFrames == SLICES * len(seg.SegmentSequence)
    assert seg.StudyInstanceUID == source[0].StudyInstanceUID
    assert seg.SeriesDescription == f"RUO SEG {DEFAULT_MODEL} LRP conserving-reference"
    assert seg.SeriesNumber == 1000 + 10 * 3 + 1
    assert seg.ImageComments.startswith("RESEARCH USE ONLY")
    assert seg.ContentDescription.startswith("RUO")
    assert seg.get_segment_description(1).SegmentedPropertyTypeCodeSequence[0].CodeValue == "SURFDEF"
    ours = httpx.get(view["links"]["artifacts"]["seg.dcm"], headers=round_trip.HEADERS, timeout=10).raise_for_status()
    assert pydicom.dcmread(io.BytesIO(ours.content)).SOPInstanceUID == seg.SOPInstanceUID  # the job's own SEG


def only_instance(orthanc: OrthancServer, series_uid: str) -> bytes:
    """The one instance of the series Orthanc holds under this SeriesInstanceUID."""
    with orthanc.client() as http:
        [found] = http.post("/tools/lookup", content=series_uid).raise_for_status().json()
        [instance] = http.get(f"/series/{found['ID']}/instances").raise_for_status().json()
    return orthanc.instance_file(instance["ID"])
