"""lrpseg against a real PACS (Orthanc with its DICOMweb plugin, tests/orthanc_server.py), through
the app, real Redis, a real RQ worker and the deliverer thread a worker runs.

A series stored in Orthanc is pulled by WADO-RS, explained by a 3-D U-Net, and its SEG and
relevance Parametric Map go back by STOW-RS (one job) and by C-STORE (another); Orthanc then holds
them, highdicom reads the SEG, and it references every source instance. A modality the model
does not declare is refused. A PACS that is down gets its delivery retried, then reported failed,
and the job's result stays.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from collections.abc import Callable
from typing import Any

import highdicom as hd
import pydicom
import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr
from pydicom.uid import ParametricMapStorage, SegmentationStorage

from core.settings import Settings
from lrpseg.registry import Registry
from schemas.jobs import JobView
from tests.orthanc_server import OrthancServer
from tests.pacs.round_trip import deliverer, lookup
from tests.redis_server import free_port
from tests.service import factories
from tests.service.pacs_series import encode, make_series, zipped
from tests.service.receiver import Received, running_receiver

MR_ONLY = "tiny-mr3d@1"
ATTEMPTS = 3


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """The clinical test models, and the 3-D U-Net again declaring MR only (for the domain guard)."""
    folder = tmp_path_factory.mktemp("pacs-models")
    factories.write_clinical_models(folder)
    mr = folder / MR_ONLY
    shutil.copytree(folder / factories.VOLUME, mr)
    config = json.loads((mr / "config.json").read_text())
    config.update(name="tiny-mr3d", domain={"modalities": ["MR"], "description": "MR volumes"})
    (mr / "config.json").write_text(json.dumps(config))
    return Registry([folder], default=factories.VOLUME)


@pytest.fixture
def settings(settings: Settings, orthanc: OrthancServer) -> Settings:
    return settings.model_copy(
        update={
            "dicomweb_allowed_hosts": ["127.0.0.1"],
            "dicomweb_destination": orthanc.dicomweb_url,
            "dimse_destination": f"ORTHANC@127.0.0.1:{orthanc.dicom_port}",
            "callback_attempts": ATTEMPTS,
            "callback_base_delay": 0.2,
            "callback_poll": 0.05,
            "callback_lease": 25.0,
            "dicom_send_timeout": 10.0,
        }
    )


def submit(client: TestClient, params: dict[str, Any], series: bytes | None = None) -> str:
    files = {"image": ("series.zip", series, "application/zip")} if series is not None else None
    response = client.post("/v1/jobs", files=files, data={"params": json.dumps(params)})
    assert response.status_code == 202, response.text
    return str(response.headers["location"])


def view_of(client: TestClient, location: str) -> JobView:
    return JobView.model_validate(client.get(location).json())


def settled(client: TestClient, location: str, timeout: float = 30.0) -> JobView:
    """The job once none of its deliveries is pending."""
    deadline = time.monotonic() + timeout
    while True:
        view = view_of(client, location)
        if all(d.status != "pending" for d in view.deliveries or []) or time.monotonic() > deadline:
            return view
        time.sleep(0.05)


def unbounded(request: Received) -> bytes:
    """A multipart body without its (per-attempt) boundary."""
    boundary = request.headers["content-type"].rpartition("boundary=")[2]
    return request.body.replace(boundary.encode(), b"")


PULL = {"masks": ["simple"], "lrp": {"composite": "ours"}}  # tiny models' defect logits are negative (docs/lrp.md)


def test_pulled_series_comes_back_to_orthanc_by_stow_and_by_c_store(
    client: TestClient,
    work: Callable[[], bool],
    redis_conn: redis.Redis,
    settings: Settings,
    orthanc: OrthancServer,
) -> None:
    source = make_series(6)
    for ds in source:
        orthanc.upload(encode(ds))
    uids = {str(ds.SOPInstanceUID) for ds in source}
    reference = {
        "url": orthanc.dicomweb_url,
        "study": source[0].StudyInstanceUID,
        "series": source[0].SeriesInstanceUID,
    }
    by_stow = submit(client, {**PULL, "source": {"dicomweb": reference}, "send": {"dimse": False}})
    by_dimse = submit(client, {**PULL, "source": {"dicomweb": reference}, "send": {"dicomweb": False}})
    assert [d.kind for d in view_of(client, by_stow).deliveries or []] == ["dicomweb"]
    assert [d.status for d in view_of(client, by_dimse).deliveries or []] == ["pending"]
    assert work()
    with deliverer(redis_conn, settings):
        views = [settled(client, location) for location in (by_stow, by_dimse)]

    for view, kind in zip(views, ("dicomweb", "dimse"), strict=True):
        assert view.status == "finished", view.error
        result = view.result
        assert result is not None and (result.input.format, result.input.depth, result.input.modality) == (
            "dicom-series",
            6,
            "CT",
        )
        (delivery,) = view.deliveries or []
        assert (delivery.kind, delivery.status, delivery.attempts) == (kind, "delivered", 1), delivery
        ours = {name: client.get(url).content for name, url in (view.links.artifacts or {}).items()}
        for name, sop_class in (("seg.dcm", SegmentationStorage), ("relevance.dcm", ParametricMapStorage)):
            sent = pydicom.dcmread(io.BytesIO(ours[name]))
            stored = pydicom.dcmread(io.BytesIO(lookup(orthanc, str(sent.SOPInstanceUID))))
            assert stored.SOPClassUID == sop_class and stored.NumberOfFrames == sent.NumberOfFrames
            assert stored.StudyInstanceUID == source[0].StudyInstanceUID
            assert stored.SeriesDescription.startswith("RUO ") and "tiny-unet3d@1 LRP ours" in stored.SeriesDescription
            assert stored.SeriesNumber == 1000 + 10 * 3 + (1 if name == "seg.dcm" else 2)
            assert stored.ImageComments.startswith("RESEARCH USE ONLY")
            referenced = {
                str(item.ReferencedSOPInstanceUID)
                for frame in stored.PerFrameFunctionalGroupsSequence
                for derivation in frame.DerivationImageSequence
                for item in derivation.SourceImageSequence
            }
            assert referenced == uids  # per-frame references to every source instance
        seg = hd.seg.segread(
            io.BytesIO(lookup(orthanc, str(pydicom.dcmread(io.BytesIO(ours["seg.dcm"])).SOPInstanceUID)))
        )
        assert {uid for _, _, uid in seg.get_source_image_uids()} == uids
        assert seg.NumberOfFrames == 6 * len(seg.SegmentSequence)  # one SEG series: a frame per slice and segment
        mask = seg.get_segment_description(2)
        assert mask.SegmentLabel == "LRP mask (simple)" and mask.SegmentAlgorithmName == "LRP ours + simple mask"
        assert mask.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "LRPEXPL"
    assert len(orthanc.instance_ids()) == 6 + 2 * 2  # the source, and each job's SEG + map


def test_a_modality_the_model_does_not_declare_is_refused(
    client: TestClient, work: Callable[[], bool], redis_conn: redis.Redis, settings: Settings, orthanc: OrthancServer
) -> None:
    source = make_series(4)
    response = client.post(
        "/v1/jobs",
        files={"image": ("series.zip", zipped(source), "application/zip")},
        data={"params": json.dumps({"model": MR_ONLY})},
    )
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["errors"][0]["field"] == "image" and "modality CT" in body["detail"] and "['MR']" in body["detail"]
    # pulled, the series is only seen by the worker: the job fails naming the modality, nothing is sent
    for ds in source:
        orthanc.upload(encode(ds))
    reference = {
        "url": orthanc.dicomweb_url,
        "study": source[0].StudyInstanceUID,
        "series": source[0].SeriesInstanceUID,
    }
    location = submit(client, {"model": MR_ONLY, "source": {"dicomweb": reference}})
    work()
    view = view_of(client, location)
    assert view.status == "failed" and view.error is not None and view.error.code == "bad_input"
    assert "modality CT" in view.error.detail
    assert [(d.status, d.last_error) for d in view.deliveries or []] == [("skipped", "the job failed")] * 2
    assert len(orthanc.instance_ids()) == 4


def test_pacs_down_delivery_retried_then_failed_and_the_result_kept(
    make_client: Callable[[Settings], TestClient],
    redis_conn: redis.Redis,
    registry: Registry,
    settings: Settings,
) -> None:
    from workers.worker import build_worker

    with running_receiver([503, 503, 200]) as flaky:
        settings = settings.model_copy(
            update={
                "dicomweb_destination": flaky.url.split("?")[0],  # a DICOMweb root that fails twice, then takes it
                "dimse_destination": f"ORTHANC@127.0.0.1:{free_port()}",  # nothing listens: the PACS is down
                "dicomweb_token": SecretStr("t0ken"),
            }
        )
        client = make_client(settings)
        location = submit(client, PULL, zipped(make_series(4)))
        worker = build_worker(settings, connection=redis_conn, registry=registry, name=None, heartbeat=False)
        assert worker.work(burst=True, logging_level="WARNING")
        with deliverer(redis_conn, settings):
            view = settled(client, location)
        stow = flaky.requests
    assert view.status == "finished"
    by_kind = {d.kind: d for d in view.deliveries or []}
    assert (by_kind["dicomweb"].status, by_kind["dicomweb"].attempts) == ("delivered", 3)
    assert (by_kind["dimse"].status, by_kind["dimse"].attempts) == ("failed", ATTEMPTS)
    assert "association" in (by_kind["dimse"].last_error or "")
    assert len(stow) == 3 and unbounded(stow[0]) == unbounded(stow[2])  # the same two instances each time
    assert stow[0].headers["content-type"].startswith('multipart/related; type="application/dicom"')
    assert stow[0].body.count(b"Content-Type: application/dicom\r\n") == 2
    assert {r.headers["authorization"] for r in stow} == {"Bearer t0ken"}
    # nothing lost: the result and its DICOM outputs are still there to fetch
    seg = client.get((view.links.artifacts or {})["seg.dcm"])
    assert seg.status_code == 200 and hd.seg.segread(io.BytesIO(seg.content)).NumberOfFrames == 4 * 2


def test_a_2d_model_turns_a_series_into_one_seg_series(
    client: TestClient, work: Callable[[], bool], redis_conn: redis.Redis, settings: Settings, orthanc: OrthancServer
) -> None:
    """The surface model (2-D, domain OT/XC) on a pulled 5-slice OT series: one SEG and one map, not
    one per slice, a frame per slice (and segment) each referencing its instance."""
    source = make_series(5, size=32, modality="OT")
    for ds in source:
        orthanc.upload(encode(ds))
    reference = {
        "url": orthanc.dicomweb_url,
        "study": source[0].StudyInstanceUID,
        "series": source[0].SeriesInstanceUID,
    }
    params = {
        "model": factories.SURFACE,
        "masks": ["simple"],
        "source": {"dicomweb": reference},
        "send": {"dimse": False},
    }
    location = submit(client, params)
    assert work()
    with deliverer(redis_conn, settings):
        view = settled(client, location)
    assert view.status == "finished", view.error
    assert view.result is not None and (view.result.input.depth, view.result.model.id) == (5, factories.SURFACE)
    assert [d.status for d in view.deliveries or []] == ["delivered"]
    assert len(orthanc.instance_ids()) == 5 + 2  # one SEG and one map for the whole series
    seg_uid = pydicom.dcmread(io.BytesIO(client.get((view.links.artifacts or {})["seg.dcm"]).content)).SOPInstanceUID
    seg = hd.seg.segread(io.BytesIO(lookup(orthanc, str(seg_uid))))
    assert seg.NumberOfFrames == 5 * len(seg.SegmentSequence)
    assert {uid for _, _, uid in seg.get_source_image_uids()} == {str(ds.SOPInstanceUID) for ds in source}
    assert seg.SeriesDescription == "RUO SEG tiny-surface@1 LRP conserving-reference"
    assert seg.get_segment_description(1).SegmentedPropertyTypeCodeSequence[0].CodeValue == "SURFDEF"
