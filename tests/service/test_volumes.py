"""Volumes and model domains through real HTTP (the app), real Redis and a real RQ worker."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file
from sklearn.metrics import jaccard_score, precision_score, recall_score

from core.settings import Settings
from lrpseg.registry import Registry
from schemas.jobs import JobView
from tests.lrpseg.io.test_dicom_series import encode, series, zipped
from tests.service import factories


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """Overrides the session registry: a 3-D U-Net (default) and a surface-domain 2-D U-Net."""
    return factories.write_clinical_models(tmp_path_factory.mktemp("clinical"))


def post(client: TestClient, name: str, data: bytes, params: dict[str, Any] | None = None, truth: bytes | None = None):
    files = {"image": (name, data, "application/octet-stream")}
    if truth is not None:
        files["ground_truth"] = ("truth.npy", truth, "application/octet-stream")
    return client.post("/v1/jobs", files=files, data={"params": json.dumps(params or {})})


def finished(client: TestClient, work: Callable[[], bool], response) -> JobView:
    assert response.status_code == 202, response.text
    assert work()
    view = JobView.model_validate(client.get(response.headers["location"]).json())
    assert view.status == "finished", view.error
    return view


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_nifti_volume_end_to_end(client: TestClient, work: Callable[[], bool]) -> None:
    volume, truth = factories.defect_volume()  # (D, H, W) = (16, 32, 32)
    nii = gzip.compress(nib.Nifti1Image(volume.transpose(2, 1, 0), np.eye(4)).to_bytes())  # stored (x, y, z)
    ours = {"lrp": {"composite": "ours"}}  # the tiny model's defect logits are negative (docs/lrp.md)
    view = finished(client, work, post(client, "scan.nii.gz", nii, ours, truth=npy_bytes(truth.astype(np.uint8))))
    result = view.result
    assert result.model.id == factories.VOLUME
    assert (result.input.format, result.input.depth, result.input.height, result.input.width) == ("nifti", 16, 32, 32)
    assert result.segmentation.depth == 16 and result.explanation.explained_pixels > 0
    blobs = {a.name: client.get(a.url) for a in result.artifacts}
    assert {"overlay.png", "segmentation.png", "relevance.npy"} <= set(blobs)
    relevance = np.load(io.BytesIO(blobs["relevance.npy"].content), allow_pickle=False)
    assert relevance.shape == (1, 16, 32, 32)
    np.testing.assert_allclose(relevance.sum(dtype=np.float64), result.explanation.relevance_sum, rtol=1e-5)
    overlay = factories.decode_png(blobs["overlay.png"].content)
    assert overlay.shape == (3 * 32 + 4, 3 * 32 + 4, 3)
    simple = result.masks["simple"]
    from lrpseg.masks import simple as simple_mask

    mask = simple_mask(relevance.sum(0, dtype=np.float64)).mask
    assert simple.pixels == mask.sum()
    gt = simple.vs_ground_truth
    assert gt.iou == pytest.approx(jaccard_score(truth.ravel(), mask.ravel(), zero_division=0))
    assert gt.precision == pytest.approx(precision_score(truth.ravel(), mask.ravel(), zero_division=0))
    assert gt.recall == pytest.approx(recall_score(truth.ravel(), mask.ravel(), zero_division=0))


def test_npy_volume_and_dicom_series_zip(client: TestClient, work: Callable[[], bool]) -> None:
    volume, _ = factories.defect_volume()
    view = finished(client, work, post(client, "scan.npy", npy_bytes(volume), {"masks": ["bmm"]}))
    assert view.result.input.depth == 16 and view.result.input.format == "npy"
    # a CT series of 4 slices is a volume too; its 128x128 slices go through the 3-D U-Net
    archive = zipped({f"{i}.dcm": encode(ds) for i, (_, ds) in enumerate(series(4))})
    view = finished(client, work, post(client, "series.zip", archive, {"masks": ["simple"]}))
    assert (view.result.input.format, view.result.input.depth, view.result.input.modality) == ("dicom-series", 4, "CT")
    seg = hd.seg.segread(io.BytesIO(client.get(view.links.artifacts["seg.dcm"]).content))
    assert seg.NumberOfFrames == 4 * len(seg.SegmentSequence)  # a frame per slice and segment
    assert len(seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence) == 4


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return response.json()


def test_volume_limits_and_wrong_dimensions_are_problems(
    make_client: Callable[[Settings], TestClient], settings: Settings
) -> None:
    client = make_client(settings.model_copy(update={"max_voxels": 16 * 32 * 32 - 1}))
    volume, _ = factories.defect_volume()
    body = problem(post(client, "scan.npy", npy_bytes(volume)), 413)
    assert "voxels" in body["detail"] and body["errors"][0]["field"] == "image"
    flat = factories.png_bytes(factories.defect_image(32)[0])
    body = problem(post(client, "flat.png", flat), 422)
    assert "takes volumes" in body["detail"]


def test_ct_into_a_surface_model_is_422_unless_allowed(client: TestClient, work: Callable[[], bool]) -> None:
    ct = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    body = problem(post(client, "ct.dcm", ct, {"model": factories.SURFACE}), 422)
    assert body["errors"][0]["field"] == "image"
    assert "modality CT" in body["detail"] and "allow_domain_mismatch" in body["detail"]
    view = finished(
        client, work, post(client, "ct.dcm", ct, {"model": factories.SURFACE, "allow_domain_mismatch": True})
    )
    assert view.result.input.modality == "CT"
    assert any("outside the model's domain" in w for w in view.result.warnings)
    models = {m["id"]: m for m in client.get("/v1/models").json()["models"]}
    surface = models[factories.SURFACE]
    assert (
        surface["domain"]["modalities"] == ["OT", "XC"]
        and surface["segment_codes"]["defect"]["type"]["value"] == "SURFDEF"
    )
    assert models[factories.VOLUME]["spatial_dims"] == 3


def test_queued_volumes_of_one_shape_share_a_pass(
    make_client: Callable[[Settings], TestClient], settings: Settings, redis_conn, registry: Registry
) -> None:
    """A batching worker (batch_max 4) groups volume jobs like images: by model, pass params, (C, D, H, W)."""
    from workers.worker import build_worker

    settings = settings.model_copy(update={"batch_max": 4})
    client = make_client(settings)

    def work() -> bool:
        worker = build_worker(settings, connection=redis_conn, registry=registry, name=None, heartbeat=False)
        return worker.work(burst=True, logging_level="WARNING")

    a, _ = factories.defect_volume(seed=1)
    b, _ = factories.defect_volume(seed=2)
    locations = []
    for volume in (a, b):
        response = post(client, "v.npy", npy_bytes(volume), {"masks": ["simple"]})
        assert response.status_code == 202, response.text
        locations.append(response.headers["location"])
    assert work()
    results = [JobView.model_validate(client.get(loc).json()).result for loc in locations]
    assert [r.timings.batch_size for r in results] == [2, 2]
    single = finished(client, work, post(client, "v.npy", npy_bytes(a), {"masks": ["simple"]})).result
    assert single.timings.batch_size == 1
    assert single.explanation.relevance_sum == pytest.approx(results[0].explanation.relevance_sum, rel=1e-5)
