"""Inputs as rigs send them (params.input): 12-bit data in 16-bit TIFF, grey saved as RGB, model
defaults, and never an all-background answer without a warning. Real Redis, real RQ worker."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import redis
from fastapi.testclient import TestClient

from core.settings import Settings
from lrpseg.registry import Registry
from service.app import create_app
from tests.lrpseg.io.test_levels import twelve_bit_tiff
from tests.service import factories
from tests.service.test_jobs import submit
from workers.worker import build_worker


def finished(client: TestClient, work: Callable[[], bool], image: bytes, params: dict[str, Any]) -> dict[str, Any]:
    response = submit(client, image, params)
    assert response.status_code == 202, response.text
    work()
    view = client.get(response.headers["location"]).json()
    assert view["status"] == "finished", view
    return view


def relevance(client: TestClient, view: dict[str, Any]) -> np.ndarray:
    return np.load(io.BytesIO(client.get(view["links"]["artifacts"]["relevance.npy"]).content))


def test_twelve_bit_tiff_warns_and_bits_read_it_right(client: TestClient, work: Callable[[], bool]) -> None:
    data, values = twelve_bit_tiff()
    plain = finished(client, work, data, {"masks": ["gmm"]})["result"]
    assert any("of its 16-bit range" in w and "params.input.bits" in w for w in plain["warnings"])
    assert plain["params"]["input"] == {"bits": None, "window": None, "channels": "reject"}

    declared = finished(client, work, data, {"masks": ["gmm"], "input": {"bits": 12}})
    result = declared["result"]
    assert not any("range" in w for w in result["warnings"]) and result["params"]["input"]["bits"] == 12
    # bits=12 reads the samples exactly as the same values divided by 4095, sent as floats in [0, 1]
    floats = io.BytesIO()
    np.save(floats, (values / 4095).astype(np.float32))
    same = finished(client, work, floats.getvalue(), {"masks": ["gmm"]})
    np.testing.assert_array_equal(relevance(client, declared), relevance(client, same))
    assert np.abs(relevance(client, declared)).max() > 0


def test_no_silent_all_background_answer(client: TestClient, work: Callable[[], bool]) -> None:
    """Whatever the model finds in a dark image, an empty target class never passes unremarked."""
    for image in (twelve_bit_tiff()[0], factories.png_bytes(np.zeros((64, 64), np.uint8))):
        result = finished(client, work, image, {"masks": ["simple"]})["result"]
        defect = result["segmentation"]["classes"][1]["pixels"]
        said = any("predicts no 'defect' pixels" in w for w in result["warnings"])
        assert said == (defect == 0), (defect, result["warnings"])
        assert result["warnings"], "a dark or flat input always gets a warning"


def test_rgb_grey_is_refused_with_a_hint_or_converted(client: TestClient, work: Callable[[], bool]) -> None:
    grey, _ = factories.defect_image(64)
    rgb = factories.png_bytes(np.repeat(grey[..., None], 3, axis=2))
    response = submit(client, rgb, {})
    assert response.status_code == 422
    assert "params.input.channels" in response.json()["detail"]
    converted = finished(client, work, rgb, {"input": {"channels": "luminance"}})
    alone = finished(client, work, factories.png_bytes(grey), {})
    np.testing.assert_array_equal(relevance(client, converted), relevance(client, alone))
    assert converted["result"]["input"]["channels"] == 1


def test_bad_input_params_are_422s(client: TestClient) -> None:
    data, _ = twelve_bit_tiff()
    cases = {
        "params.input": {"input": {"bits": 12, "window": {"centre": 1, "width": 2}}},
        "params.input.bits": {"input": {"bits": 8}},
        "params.input.window.width": {"input": {"window": {"centre": 1, "width": 0}}},
        "params.input.channels": {"input": {"channels": "average"}},
    }
    for field, params in cases.items():
        response = submit(client, data, params)
        assert response.status_code == 422, (field, response.text)
        assert response.json()["errors"][0]["field"] == field, response.json()


def test_the_model_sets_input_defaults(
    redis_conn: redis.Redis, registry: Registry, settings: Settings, tmp_path: Path
) -> None:
    """A model whose config.json says its images are 12-bit: requests need not; they may override."""
    folder = tmp_path / factories.SEGMENTER
    shutil.copytree(registry.get(factories.SEGMENTER).path, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "input": {"bits": 12, "channels": "luminance"}}))
    twelve = Registry([tmp_path])
    client = TestClient(create_app(settings, registry=twelve, connection=redis_conn))

    def work() -> bool:
        worker = build_worker(settings, connection=redis_conn, registry=twelve, name=None, heartbeat=False)
        return worker.work(burst=True, logging_level="WARNING")

    data, _ = twelve_bit_tiff()
    result = finished(client, work, data, {"task": "segment"})["result"]
    assert result["params"]["input"] == {"bits": 12, "window": None, "channels": "luminance"}
    assert not any("range" in w for w in result["warnings"])
    result = finished(client, work, data, {"task": "segment", "input": {"bits": 16}})["result"]
    assert result["params"]["input"]["bits"] == 16 and any("16-bit range" in w for w in result["warnings"])
