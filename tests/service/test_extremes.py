"""Finite extremes (issue 15, defect 4): values near the float64 limits scale without overflow, and
what the worker would refuse (values that overflow once rescaled) is refused at submission and by
the viewer's preview alike, as problem+json naming the field; never a 500."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pydicom.data
from fastapi.testclient import TestClient
from PIL import Image


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def extreme_image(size: int = 64) -> np.ndarray:
    """A gradient from -1e308 to 1e308 (finite; hi - lo overflows float64)."""
    return (np.linspace(-1.0, 1.0, size * size) * 1e308).reshape(size, size)


def overflowing_dicom() -> bytes:
    ds = pydicom.dcmread(Path(pydicom.data.get_testdata_file("CT_small.dcm")))
    ds.RescaleSlope = "1e308"  # stored values x 1e308 overflow to infinity
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def test_finite_extremes_preview_and_run_like_any_image(client: TestClient, work: Callable[[], bool]) -> None:
    data = npy_bytes(extreme_image())
    response = client.post("/viewer/preview", files={"image": ("x.npy", data, "application/octet-stream")})
    assert response.status_code == 200, response.text
    pixels = np.asarray(Image.open(io.BytesIO(response.content)))[..., 0].astype(np.float64)
    expected = np.linspace(0.0, 1.0, 64 * 64).reshape(64, 64) * 255
    assert np.abs(pixels - expected).max() <= 0.5 + 1e-9  # the exact min-max ramp, rounded to 8 bits

    accepted = client.post("/v1/jobs", files={"image": ("x.npy", data, "application/octet-stream")})
    assert accepted.status_code == 202, accepted.text
    work()
    assert client.get(accepted.headers["location"]).json()["status"] == "finished"


def test_values_that_overflow_when_rescaled_are_refused_up_front(client: TestClient) -> None:
    data = overflowing_dicom()
    for path in ("/viewer/preview", "/v1/jobs"):
        response = client.post(path, files={"image": ("ct.dcm", data, "application/dicom")})
        assert response.status_code == 422, (path, response.status_code, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["errors"][0]["field"] == "image" and "infinite" in body["detail"], body


def test_non_finite_npy_is_refused_at_submission(client: TestClient) -> None:
    image = np.zeros((32, 32), np.float64)
    image[3, 4] = np.inf
    response = client.post("/v1/jobs", files={"image": ("x.npy", npy_bytes(image), "application/octet-stream")})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "image"
