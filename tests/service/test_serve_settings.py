"""`lrpseg serve`'s embedded defaults, as settings (no processes started)."""

from __future__ import annotations

import pytest

from core import pool
from core.settings import Settings
from service import callback_urls
from service.serve import with_loopback_callbacks

KEYS = {"api_keys": "ops:" + "0" * 64}  # an API off loopback needs keys


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "lrpseg.example.org"])
def test_no_loopback_callbacks_when_the_api_listens_off_loopback(host: str) -> None:
    settings = with_loopback_callbacks(Settings(host=host, callback_secret="x", **KEYS))
    assert settings.callback_allowed_hosts == []  # callbacks stay off: no SSRF to this machine
    with pytest.raises(Exception, match="callbacks are disabled"):
        callback_urls.check_callback_url(
            "http://127.0.0.1:6379/h", settings.callback_allowed_hosts, settings.callback_secret
        )


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_loopback_callbacks_when_the_api_listens_on_loopback(host: str) -> None:
    settings = with_loopback_callbacks(Settings(host=host, callback_secret="x"))
    url = "http://127.0.0.1:9000/h"
    assert callback_urls.check_callback_url(url, settings.callback_allowed_hosts, settings.callback_secret) == url


def test_an_operator_list_is_kept_off_loopback() -> None:
    listed = Settings(host="0.0.0.0", callback_secret="x", callback_allowed_hosts="ris.example.org", **KEYS)
    assert with_loopback_callbacks(listed).callback_allowed_hosts == ["ris.example.org"]


@pytest.mark.parametrize(
    ("device", "workers", "gpus", "expected"),
    [
        ("cuda", 4, 4, ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]),  # one worker per GPU
        ("auto", 3, 2, ["cuda:0", "cuda:1", "cuda:0"]),  # more workers than GPUs: round-robin
        ("cuda:1", 2, 4, ["cuda:1", "cuda:1"]),  # pinned
        ("auto", 2, 0, ["auto", "auto"]),  # no GPU: each worker picks (the CPU)
        ("cpu", 2, 4, ["cpu", "cpu"]),
        ("cuda", 1, 0, ["cuda"]),  # asked for CUDA without one: the worker says so when it starts
    ],
)
def test_serve_gives_each_worker_its_device(device: str, workers: int, gpus: int, expected: list[str]) -> None:
    assert pool.worker_devices(device, workers, gpus) == expected
    settings = Settings(device=device, workers=workers)
    envs = [
        pool.worker_env(settings, "redis://127.0.0.1:6379/0", d) for d in pool.worker_devices(device, workers, gpus)
    ]
    assert [env["LRPSEG_DEVICE"] for env in envs] == expected
    assert [Settings(device=env["LRPSEG_DEVICE"]).device for env in envs] == expected  # each worker accepts its own
