"""Bad input is a 4xx problem+json naming what is wrong, at once, before anything is queued."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from core.settings import Settings
from tests.service import factories
from tests.service.test_jobs import submit

QUEUE_KEY = "rq:queue:lrpseg-test"


@pytest.fixture
def png() -> bytes:
    return factories.png_bytes(factories.defect_image(64)[0])


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["request_id"] == response.headers["x-request-id"]
    assert body["type"].startswith("https://") and body["title"]
    return body


def fields(body: dict) -> list[str]:
    return [e["field"] for e in body.get("errors", [])]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ('{"masks": ["otsu"]}', "params.masks.0"),
        ('{"target": {"kind": "region"}}', "params.target"),
        ('{"lrp": {"composite": "zennit"}}', "params.lrp.composite"),
        ('{"unknown": 1}', "params.unknown"),
        ("{not json", "params"),
        ("[1, 2]", "params"),
        ('{"model": "no-such-model@9"}', "params.model"),
        ('{"target": {"cls": "crack"}}', "params.target.cls"),
        ('{"target": {"cls": 7}}', "params.target.cls"),
        (
            '{"target": {"kind": "region", "cls": 1, "region": [{"x0": 0, "y0": 0, "x1": 65, "y1": 9}]}}',
            "params.target.region.0",
        ),
    ],
)
def test_bad_params_are_422_naming_the_field(
    client: TestClient, png: bytes, params: str, field: str, redis_conn: redis.Redis
) -> None:
    body = problem(submit(client, png, params), 422)
    assert field in fields(body), body
    assert field.split(".")[0] in body["detail"]
    assert redis_conn.llen(QUEUE_KEY) == 0


def test_missing_image_part_is_422(client: TestClient) -> None:
    body = problem(client.post("/v1/jobs", data={"params": "{}"}), 422)
    assert "image" in fields(body)


def test_undecodable_image_is_a_4xx(client: TestClient) -> None:
    response = submit(client, b"this is not an image at all")
    body = problem(response, response.status_code)
    assert response.status_code in (400, 415)
    assert fields(body) == ["image"]


def test_channel_mismatch_names_both_counts(client: TestClient) -> None:
    rgb = factories.png_bytes(factories.defect_image(64, channels=3)[0])
    body = problem(submit(client, rgb), 422)
    assert fields(body) == ["image"] and "3 channel" in body["detail"] and "takes 1" in body["detail"]


def test_ground_truth_of_another_size_is_422(client: TestClient, png: bytes) -> None:
    truth = factories.png_bytes(np.zeros((32, 64), np.uint8))
    body = problem(submit(client, png, None, truth), 422)
    assert fields(body) == ["ground_truth"]


def test_classifier_size_is_checked_unless_resize(client: TestClient, png: bytes, work: Callable[[], bool]) -> None:
    body = problem(submit(client, png, {"model": factories.CLASSIFIER}), 422)
    assert "32x32" in body["detail"] and "resize" in body["detail"]
    body = problem(
        submit(
            client,
            png,
            {
                "model": factories.CLASSIFIER,
                "target": {"kind": "region", "cls": 1, "region": [{"x0": 0, "y0": 0, "x1": 4, "y1": 4}]},
                "resize": True,
            },
        ),
        422,
    )
    assert fields(body) == ["params.target.kind"]
    response = submit(client, png, {"model": factories.CLASSIFIER, "resize": True, "masks": ["simple"]})
    assert response.status_code == 202
    work()
    result = client.get(response.headers["location"]).json()["result"]
    assert result["input"]["resized_from"] == [64, 64]
    assert set(result["classification"]["probabilities"]) == {"ok", "defect"}
    assert result["segmentation"] is None


def test_upload_over_the_limit_is_413(
    make_client: Callable[[Settings], TestClient], settings: Settings, png: bytes
) -> None:
    small = make_client(settings.model_copy(update={"max_upload_bytes": 100}))
    body = problem(submit(small, png), 413)
    assert "limit" in body["detail"]


def test_too_many_pixels_is_413(make_client: Callable[[Settings], TestClient], settings: Settings, png: bytes) -> None:
    small = make_client(settings.model_copy(update={"max_pixels": 32 * 32}))
    problem(submit(small, png), 413)


def test_full_queue_is_503_with_retry_after(
    make_client: Callable[[Settings], TestClient], settings: Settings, png: bytes
) -> None:
    client = make_client(settings.model_copy(update={"max_queue": 1, "retry_after": 7}))
    assert submit(client, png).status_code == 202
    response = submit(client, png)
    problem(response, 503)
    assert response.headers["retry-after"] == "7"


def test_wait_above_the_limit_is_422(client: TestClient, png: bytes) -> None:
    problem(submit(client, png, path="/v1/explain?wait=31"), 422)
    problem(submit(client, png, path="/v1/explain?wait=-1"), 422)


def test_unknown_route_and_method_are_problems(client: TestClient) -> None:
    problem(client.get("/v1/nothing"), 404)
    problem(client.put("/v1/jobs"), 405)


def test_request_ids_are_generated_or_taken_if_sane(client: TestClient) -> None:
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    odd = client.get("/healthz", headers={"X-Request-ID": "no spaces\tor tabs"}).headers["x-request-id"]
    assert odd != "no spaces\tor tabs" and len(odd) == 32


def test_problem_types_are_kebab_case_and_titles_name_the_part(client: TestClient) -> None:
    """One naming scheme for `type` (the decoders' own codes are snake_case), and a bad params
    value is "Invalid parameters" whichever check found it, never "Invalid image"."""
    png = factories.png_bytes(factories.defect_image(32)[0])
    cases = [
        ({"image": ("x.npy", b"\x93NUMPY\x01\x00" + b"x" * 20)}, {}, 400),
        ({"image": ("x.png", png)}, {"params": '{"target": {"cls": "nope"}}'}, 422),
        ({"image": ("x.png", png)}, {"params": '{"target": {"cls": "nope", "kind": "bogus"}}'}, 422),
    ]
    three = io.BytesIO()
    np.save(three, np.zeros((5, 4, 4), np.uint8))
    # a volume for a 2-D classifier (a 2-D segmenter would take it slice by slice)
    cases.append(({"image": ("x.npy", three.getvalue())}, {"params": json.dumps({"model": factories.CLASSIFIER})}, 422))
    for files, data, status in cases:
        body = client.post("/v1/jobs", files=files, data=data).json()
        assert body["status"] == status, body
        kind = body["type"].removeprefix("https://lrpseg.dev/problems/")
        assert kind == kind.lower() and "_" not in kind and " " not in kind, body["type"]
        if body["errors"][0]["field"].startswith("params"):
            assert body["title"] == "Invalid parameters" and kind == "invalid-params", body


def test_duplicate_parts_are_refused_not_last_one_wins(client: TestClient) -> None:
    """Issue 15: two `image` or `params` parts used to be accepted, the last one silently used."""
    png = factories.png_bytes(factories.defect_image(64)[0])
    two_images = [("image", ("a.png", png, "image/png")), ("image", ("b.png", png, "image/png"))]
    for path in ("/v1/jobs", "/v1/explain?wait=0", "/viewer/preview"):
        response = client.post(path, files=two_images)
        assert response.status_code == 400, (path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"][0]["field"] == "image"
    files = [
        ("image", ("a.png", png, "image/png")),
        ("params", (None, "{}")),
        ("params", (None, '{"task": "segment"}')),
    ]
    response = client.post("/v1/jobs", files=files)
    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "params"
    batch = [("images", ("a.png", png, "image/png")), ("params", (None, "{}")), ("params", (None, "{}"))]
    assert client.post("/v1/batches", files=batch).status_code == 400
    assert client.post("/v1/jobs", files=[two_images[0]]).status_code == 202  # one of each is fine
