"""Layer names the worker would refuse (unknown `lrp.rules` keys, a bad `cam_layer`) are refused at
submission as problem+json naming the field (issue 15); good names still pass and run."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from tests.service import factories
from tests.service.test_jobs import submit


def png() -> bytes:
    return factories.png_bytes(factories.defect_image(64)[0])


def test_unknown_rule_layers_are_refused_at_submission(client: TestClient) -> None:
    response = submit(client, png(), {"lrp": {"rules": {"encoders.9.9": {"rule": "flat"}}}})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["errors"][0]["field"] == "params.lrp.rules" and "encoders.9.9" in body["detail"]


def test_a_bad_cam_layer_is_refused_at_submission(client: TestClient) -> None:
    response = submit(client, png(), {"method": "seg-grad-cam", "cam_layer": "no.such.layer"})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["errors"][0]["field"] == "params.cam_layer" and "no.such.layer" in body["detail"]


def test_known_layer_names_pass_and_run(client: TestClient, work: Callable[[], bool]) -> None:
    ok = [
        submit(client, png(), {"lrp": {"rules": {"head": {"rule": "epsilon", "epsilon": 1e-6}}}}),
        submit(client, png(), {"method": "seg-grad-cam", "cam_layer": "bottleneck.3"}),
    ]
    assert [r.status_code for r in ok] == [202, 202], [r.text for r in ok]
    work()
    for response in ok:
        view = client.get(response.headers["location"]).json()
        assert view["status"] == "finished", view
