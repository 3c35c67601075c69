"""A job through real HTTP (the app), real Redis and a real RQ worker, on a tiny U-Net."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from sklearn.metrics import f1_score, jaccard_score, precision_score, recall_score

from schemas.jobs import JobView
from schemas.results import JobResult
from tests.service import factories

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def submit(
    client: TestClient,
    image: bytes,
    params: dict[str, Any] | str | None = None,
    truth: bytes | None = None,
    headers: dict[str, str] | None = None,
    path: str = "/v1/jobs",
) -> Any:
    files = {"image": ("image.png", image, "image/png")}
    if truth is not None:
        files["ground_truth"] = ("truth.png", truth, "image/png")
    data = {} if params is None else {"params": params if isinstance(params, str) else json.dumps(params)}
    return client.post(path, files=files, data=data, headers=headers or {})


@pytest.fixture
def sample() -> tuple[bytes, bytes, np.ndarray, np.ndarray]:
    image, truth = factories.defect_image(64)
    return factories.png_bytes(image), factories.png_bytes(truth.astype(np.uint8) * 255), image, truth


def test_full_explain_job_returns_consistent_artifacts_and_metrics(
    client: TestClient, work: Callable[[], bool], sample: tuple
) -> None:
    image_png, truth_png, _, truth = sample
    # ours: the tiny test U-Net gives its defect pixels negative logits, so the conserving default's
    # map is negative everywhere (it conserves a negative r_out) and seed 001's extractors, which look
    # for positive evidence, return empty masks; this test checks that masks and artifacts agree
    params = {"lrp": {"composite": "ours"}}
    response = submit(client, image_png, params, truth_png, headers={"X-Request-ID": "trace-42"})
    assert response.status_code == 202, response.text
    assert response.headers["x-request-id"] == "trace-42"
    location = response.headers["location"]
    assert location.endswith(f"/v1/jobs/{response.json()['job_id']}") and int(response.headers["retry-after"]) >= 1

    queued = client.get(location).json()
    assert queued["status"] == "queued" and queued["position"] == 0 and queued["request_id"] == "trace-42"

    assert work()
    view = JobView.model_validate(client.get(location).json())
    assert view.status == "finished" and view.error is None and view.progress.fraction == 1.0
    result = view.result
    assert isinstance(result, JobResult)
    assert result.model.id == factories.SEGMENTER and result.params.target.cls == 1
    assert set(result.timings.model_dump(exclude_none=True)) >= {
        "decode",
        "forward",
        "lrp",
        "masks",
        "metrics",
        "render",
        "total",
    }
    names = {a.name for a in result.artifacts}
    assert names == {
        "segmentation.png",
        "relevance.png",
        "overlay.png",
        "colorbar.png",
        "relevance.npy",
        "segmentation.npy",
        "mask-simple.png",
        "mask-gmm.png",
        "mask-bmm.png",
        "mask-component.png",
        "pr-curve.png",
    }

    blobs = {a.name: client.get(a.url) for a in result.artifacts}
    for name, blob in blobs.items():
        assert blob.status_code == 200, name
        assert int(blob.headers["content-length"]) == next(a.bytes for a in result.artifacts if a.name == name)
    for name in ("segmentation.png", "relevance.png", "overlay.png", "mask-gmm.png"):
        assert blobs[name].headers["content-type"] == "image/png"
        assert factories.decode_png(blobs[name].content).shape[:2] == (64, 64)

    relevance = np.load(io.BytesIO(blobs["relevance.npy"].content), allow_pickle=False)
    assert relevance.shape == (1, 64, 64) and relevance.dtype == np.float32
    labels = np.load(io.BytesIO(blobs["segmentation.npy"].content), allow_pickle=False)
    assert labels.shape == (64, 64) and labels.dtype == np.uint8
    shares = {c.index: c.pixels for c in result.segmentation.classes}
    assert {i: int((labels == i).sum()) for i in shares} == shares
    explanation = result.explanation
    assert explanation is not None and explanation.conservation is not None and explanation.explained_pixels > 0
    np.testing.assert_allclose(relevance.sum(dtype=np.float64), explanation.relevance_sum, rtol=1e-5)
    np.testing.assert_allclose(
        relevance.sum(dtype=np.float64), explanation.conservation * explanation.r_out_sum, rtol=1e-4
    )

    assert any(m.pixels for m in result.masks.values())
    for name, summary in result.masks.items():
        mask = factories.decode_png(blobs[f"mask-{name}.png"].content)
        mask = (mask if mask.ndim == 2 else mask[..., 0]) > 127
        assert summary.pixels == int(mask.sum())
        gt = summary.vs_ground_truth
        if mask.any():
            np.testing.assert_allclose(gt.iou, jaccard_score(truth.ravel(), mask.ravel()), rtol=1e-9)
            np.testing.assert_allclose(gt.precision, precision_score(truth.ravel(), mask.ravel()), rtol=1e-9)
            np.testing.assert_allclose(gt.dice, f1_score(truth.ravel(), mask.ravel()), rtol=1e-9)
        np.testing.assert_allclose(gt.recall, recall_score(truth.ravel(), mask.ravel()), rtol=1e-9)
    assert result.ground_truth.positive_pixels == int(truth.sum())


def test_segment_task_skips_the_explanation(client: TestClient, work: Callable[[], bool], sample: tuple) -> None:
    location = submit(client, sample[0], {"task": "segment"}).headers["location"]
    work()
    result = client.get(location).json()["result"]
    assert result["explanation"] is None and result["masks"] == {}
    assert sorted(a["name"] for a in result["artifacts"]) == ["segmentation.npy", "segmentation.png"]
    shares = result["segmentation"]["classes"]
    assert sum(c["pixels"] for c in shares) == 64 * 64


def test_requested_artifacts_only(client: TestClient, work: Callable[[], bool], sample: tuple) -> None:
    params = {"masks": ["gmm"], "artifacts": ["relevance.npy", "mask-gmm.png"]}
    location = submit(client, sample[0], params).headers["location"]
    work()
    view = client.get(location).json()
    assert sorted(view["links"]["artifacts"]) == ["mask-gmm.png", "relevance.npy"]
    assert list(view["result"]["masks"]) == ["gmm"]
    assert client.get(location + "/artifacts/overlay.png").status_code == 404


def test_unknown_and_malformed_jobs_are_404_problems(client: TestClient) -> None:
    for job_id in ("0" * 32, "not-a-job"):
        response = client.get(f"/v1/jobs/{job_id}", headers={"X-Request-ID": "r1"})
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["status"] == 404 and body["request_id"] == "r1" and body["instance"] == f"/v1/jobs/{job_id}"
    assert client.delete("/v1/jobs/" + "0" * 32).status_code == 404


def test_artifacts_of_an_unfinished_job_are_409(client: TestClient, sample: tuple) -> None:
    location = submit(client, sample[0]).headers["location"]
    response = client.get(location + "/artifacts/relevance.png")
    assert response.status_code == 409 and "retry-after" in response.headers
    assert client.get(location + "/artifacts/secrets.txt").status_code == 404


def test_delete_a_queued_job(client: TestClient, work: Callable[[], bool], sample: tuple, redis_conn) -> None:
    location = submit(client, sample[0]).headers["location"]
    assert client.delete(location).status_code == 204
    assert client.get(location).status_code == 410
    assert client.delete(location).status_code == 410
    assert not work()  # nothing left to run
    assert not [k for k in redis_conn.keys("lrpseg-test:input:*")]


def test_delete_a_finished_job_removes_its_artifacts(
    client: TestClient, work: Callable[[], bool], sample: tuple, redis_conn
) -> None:
    location = submit(client, sample[0]).headers["location"]
    work()
    url = client.get(location).json()["links"]["artifacts"]["relevance.png"]
    assert client.get(url).status_code == 200
    assert client.delete(location).status_code == 204
    assert client.get(url).status_code == 410
    assert not redis_conn.keys("lrpseg-test:artifacts:*")


def test_wait_returns_202_while_no_worker_runs(client: TestClient, sample: tuple) -> None:
    response = submit(client, sample[0], path="/v1/explain?wait=0.2")
    assert response.status_code == 202
    assert response.json()["status"] == "queued" and "location" in response.headers


def test_wait_returns_the_result_when_it_comes(
    client: TestClient, work: Callable[[], bool], sample: tuple, redis_conn
) -> None:
    import threading
    import time

    holder: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: holder.update(r=submit(client, sample[0], path="/v1/explain?wait=20")))
    thread.start()
    deadline = time.monotonic() + 10
    while not redis_conn.llen("rq:queue:lrpseg-test") and time.monotonic() < deadline:
        time.sleep(0.01)
    work()
    thread.join(20)
    response = holder["r"]
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "finished" and body["result"]["explanation"]["method"] == "lrp"


def test_a_failing_job_reports_why_and_the_worker_goes_on(
    client: TestClient, work: Callable[[], bool], sample: tuple, redis_conn
) -> None:
    lost = submit(client, sample[0]).headers["location"]
    fine = submit(client, sample[0]).headers["location"]
    redis_conn.delete(f"lrpseg-test:input:{lost.rsplit('/', 1)[1]}")  # the upload expired
    work()
    failed = client.get(lost).json()
    assert failed["status"] == "failed" and failed["error"]["code"] == "inputs_missing"
    assert failed["result"] is None and "Traceback" not in json.dumps(failed)
    assert client.get(fine).json()["status"] == "finished"


def test_a_job_deleted_while_running_stops_and_leaves_nothing(
    client: TestClient, work: Callable[[], bool], sample: tuple, redis_conn
) -> None:
    from core.store import Store

    location = submit(client, sample[0]).headers["location"]
    job_id = location.rsplit("/", 1)[1]
    Store(redis_conn, "lrpseg-test").mark_deleted(job_id)  # what DELETE does to a started job
    work()
    assert client.get(location).status_code == 410
    assert not redis_conn.keys("lrpseg-test:artifacts:*")


def test_idempotency_key_replays_the_same_job(client: TestClient, sample: tuple, redis_conn) -> None:
    key = {"Idempotency-Key": "upload-7"}
    first = submit(client, sample[0], {"masks": ["gmm"]}, headers=key)
    again = submit(client, sample[0], {"masks": ["gmm"]}, headers=key)
    assert first.status_code == again.status_code == 202
    assert again.json()["job_id"] == first.json()["job_id"] and again.headers["location"] == first.headers["location"]
    assert redis_conn.llen("rq:queue:lrpseg-test") == 1
    other = submit(client, sample[0], {"masks": ["bmm"]}, headers=key)
    assert other.status_code == 422 and other.json()["type"].endswith("idempotency-key-reused")
    assert (
        submit(client, sample[0], {"masks": ["gmm"]}, headers={"Idempotency-Key": "other"}).json()["job_id"]
        != (first.json()["job_id"])
    )


def test_an_idempotency_key_dies_with_its_job(client: TestClient, sample: tuple) -> None:
    """A replay after DELETE makes a new job (it used to return the deleted one: 410 for good)."""
    key = {"Idempotency-Key": "upload-8"}
    first = submit(client, sample[0], {}, headers=key)
    assert client.delete(first.headers["location"]).status_code == 204
    again = submit(client, sample[0], {}, headers=key)
    assert again.status_code == 202 and again.json()["job_id"] != first.json()["job_id"]
    assert client.get(again.headers["location"]).status_code == 200
    assert submit(client, sample[0], {}, headers=key).json()["job_id"] == again.json()["job_id"]  # replays it now


def test_a_rejected_request_does_not_burn_its_idempotency_key(client: TestClient, sample: tuple) -> None:
    key = {"Idempotency-Key": "retry-me"}
    assert submit(client, sample[0], {"target": {"cls": "crack"}}, headers=key).status_code == 422
    assert submit(client, sample[0], {"target": {"cls": "crack"}}, headers=key).status_code == 422
    assert submit(client, sample[0], {"target": {"cls": "defect"}}, headers=key).status_code == 202


def test_a_failed_enqueue_frees_its_idempotency_key(
    client: TestClient, work: Callable[[], bool], sample: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.store import Store

    put_inputs, calls = Store.put_inputs, []

    def fail_once(self: Store, *args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise redis.ConnectionError("Redis went away")
        put_inputs(self, *args, **kwargs)

    monkeypatch.setattr(Store, "put_inputs", fail_once)
    key = {"Idempotency-Key": "flaky-redis"}
    failed = submit(client, sample[0], {"masks": ["gmm"]}, headers=key)
    assert failed.status_code == 503 and failed.headers["content-type"] == "application/problem+json"
    retry = submit(client, sample[0], {"masks": ["gmm"]}, headers=key)
    assert retry.status_code == 202, retry.text
    assert work()
    view = client.get(retry.headers["location"])
    assert view.status_code == 200 and view.json()["status"] == "finished"
