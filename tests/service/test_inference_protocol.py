"""The Open Inference Protocol v2 against a real running service (uvicorn + a worker process),
driven by the protocol's own client, `tritonclient[http]`, and checked against /v1 jobs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
import redis

from lrpseg.client import Client
from lrpseg.registry import Registry
from tests.service import factories
from tests.service.live import live_service, live_settings

tritonhttp = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402  (after the importorskip)

pytestmark = pytest.mark.slow
UNET = factories.SEGMENTER.split("@")[0]
VGG = factories.CLASSIFIER.split("@")[0]


@pytest.fixture(autouse=True)
def _clean_db() -> None:
    """One service for the module: the per-test flush of tests/service/conftest.py would pull
    the worker's records from under it, so this module's tests share the database."""


@pytest.fixture(scope="module")
def url(redis_conn: redis.Redis, registry: Registry) -> Iterator[str]:
    redis_conn.flushdb()
    with live_service(redis_conn, registry, live_settings()) as base:
        yield base
    redis_conn.flushdb()


@pytest.fixture(scope="module")
def triton(url: str) -> Iterator[object]:
    client = tritonhttp.InferenceServerClient(urlparse(url).netloc, network_timeout=120.0)
    yield client
    client.close()


def image_input(array: np.ndarray, binary: bool = True) -> object:
    tensor = tritonhttp.InferInput("image", list(array.shape), "UINT8" if array.dtype == np.uint8 else "UINT16")
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def test_health_and_metadata(triton: object, url: str) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready(UNET) and triton.is_model_ready(UNET, "1")
    meta = triton.get_model_metadata(UNET)
    assert meta["name"] == UNET and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [-1, 1, -1, -1]}]
    assert {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]} == {
        "segmentation": ("UINT8", [-1, -1, -1]),
        "relevance": ("FP32", [-1, 1, -1, -1]),
        "result": ("BYTES", [-1]),
    }
    vgg = triton.get_model_metadata(VGG, "1")
    assert vgg["outputs"][0] == {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}
    assert vgg["inputs"][0]["shape"] == [-1, 1, 32, 32]
    with pytest.raises(InferenceServerException) as caught:
        triton.get_model_metadata("no-such-model")
    assert caught.value.status() == "404" and "no-such-model" in caught.value.message()
    assert httpx.get(url + "/v2").json()["extensions"] == ["binary_tensor_data"]


def test_relevance_equals_the_v1_jobs(triton: object, url: str) -> None:
    image, _ = factories.defect_image(64)
    settings = {"composite": "montavon", "masks": "gmm"}
    outputs = [
        tritonhttp.InferRequestedOutput("relevance", binary_data=True),
        tritonhttp.InferRequestedOutput("segmentation", binary_data=True),
        tritonhttp.InferRequestedOutput("result", binary_data=False),
    ]
    answer = triton.infer(UNET, [image_input(image[None, None])], outputs=outputs, parameters=settings)
    relevance, labels = answer.as_numpy("relevance"), answer.as_numpy("segmentation")
    result = json.loads(answer.as_numpy("result")[0])
    assert relevance.shape == (1, 1, 64, 64) and relevance.dtype == np.float32
    assert labels.shape == (1, 64, 64) and labels.dtype == np.uint8
    assert np.abs(relevance).max() > 0 and set(np.unique(labels)) == {0, 1}  # something to compare
    assert result["params"]["lrp"]["composite"] == "montavon" and list(result["masks"]) == ["gmm"]
    assert result["model"]["id"] == factories.SEGMENTER

    with Client(url) as client:  # the same PNG through /v1 with the same settings
        v1 = client.explain(factories.png_bytes(image), {"lrp": {"composite": "montavon"}, "masks": ["gmm"]})
    assert v1.relevance is not None and v1.segmentation is not None
    np.testing.assert_array_equal(relevance[0], v1.relevance)
    np.testing.assert_array_equal(labels[0], v1.segmentation)
    assert result["explanation"]["conservation"] == v1.result["explanation"]["conservation"]


def test_json_tensors_and_a_batch(url: str) -> None:
    images = np.stack([factories.defect_image(64, seed)[0] for seed in (1, 2)])[:, None]
    body = {
        "id": "rig-7",
        "inputs": [
            {"name": "image", "shape": list(images.shape), "datatype": "UINT8", "data": images.ravel().tolist()}
        ],
        "outputs": [{"name": "relevance"}, {"name": "segmentation"}],
        "parameters": {"params": json.dumps({"target": {"kind": "class", "cls": "defect"}}), "masks": ""},
    }
    response = httpx.post(url + f"/v2/models/{UNET}/versions/1/infer", json=body, timeout=120)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["model_name"], answer["model_version"], answer["id"]) == (UNET, "1", "rig-7")
    relevance, labels = answer["outputs"]
    assert relevance["name"] == "relevance" and relevance["shape"] == [2, 1, 64, 64]
    assert labels["datatype"] == "UINT8" and labels["shape"] == [2, 64, 64]
    with Client(url) as client:  # each batch item is an ordinary job, listed in the parameters
        for n, job_id in enumerate(answer["parameters"]["job_ids"].split(",")):
            alone = client.result(job_id)
            want = np.asarray(relevance["data"], np.float32).reshape(relevance["shape"])[n]
            np.testing.assert_array_equal(alone.relevance, want)
            assert alone.result["masks"] == {}


def test_classifier_probabilities(triton: object) -> None:
    image = factories.defect_image(32)[0][None, None]
    answer = triton.infer(VGG, [image_input(image)], outputs=[tritonhttp.InferRequestedOutput("probabilities")])
    probabilities = answer.as_numpy("probabilities")
    assert probabilities.shape == (1, 2) and abs(float(probabilities.sum()) - 1) < 1e-5


def test_bad_requests_are_protocol_errors(triton: object, url: str) -> None:
    rgb = np.zeros((1, 3, 16, 16), np.uint8)
    with pytest.raises(InferenceServerException) as caught:
        triton.infer(UNET, [image_input(rgb)])
    assert caught.value.status() == "422" and "1, H, W" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        triton.infer(UNET, [image_input(np.zeros((16, 16), np.uint8))], parameters={"colour": "red"})
    assert caught.value.status() == "400" and "'colour'" in caught.value.message()
    bad = {"inputs": [{"name": "image", "shape": [4, 4], "datatype": "UINT8", "data": [1, 2, 3]}]}
    response = httpx.post(url + f"/v2/models/{UNET}/infer", json=bad)
    assert response.status_code == 400 and "3 values for shape [4, 4]" in response.json()["error"]
    assert response.json()["errors"][0]["field"] == "inputs[0].data"
    header = json.dumps(
        {"inputs": [{"name": "image", "shape": [2, 2], "datatype": "UINT8", "parameters": {"binary_data_size": 4}}]}
    )
    response = httpx.post(
        url + f"/v2/models/{UNET}/infer",
        content=header.encode() + b"\x00\x01",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 400 and "ends before" in response.json()["error"]
