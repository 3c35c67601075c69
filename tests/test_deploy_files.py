"""Dockerfile, docker-compose.yml and .dockerignore: parsed and checked for what production needs."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", text)
    out = []
    for line in logical.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_dockerfile_builds_the_package_and_runs_unprivileged() -> None:
    steps = dockerfile_instructions()
    words = [w for w, _ in steps]
    assert words[0] == "FROM" and steps[0][1].startswith("python:3.11")
    copied = " ".join(rest for w, rest in steps if w == "COPY")
    for package in ("lrpseg", "core", "service", "workers", "schemas", "launch", "pyproject.toml"):
        assert package in copied
    assert any(w == "RUN" and "pip install" in rest for w, rest in steps)
    users = [rest for w, rest in steps if w == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert words.index("USER") > max(i for i, w in enumerate(words) if w == "RUN")
    assert ("EXPOSE", "8000") in steps
    cmd = [rest for w, rest in steps if w == "CMD"][-1]
    assert cmd.startswith("[") and '"lrpseg"' in cmd


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "var"} <= ignored


def test_redis_persists_and_never_evicts(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"] if isinstance(redis["command"], list) else shlex.split(redis["command"])
    flags = dict(zip(command[1::2], command[2::2]))
    assert flags["--maxmemory-policy"] == "noeviction"
    assert flags["--appendonly"] == "yes"
    assert flags["--appendfsync"] == "always"
    volume = redis["volumes"][0].split(":")
    assert volume[0] in compose["volumes"] and volume[1] == "/data"
    assert "healthcheck" in redis
    # AUTH from a secret (issue 15): the entrypoint adds --requirepass from the secret file
    assert "redis_password" in redis["secrets"] and "--requirepass" in " ".join(redis["entrypoint"])
    assert compose["secrets"]["redis_password"]["file"] == "./secrets/redis_password"


WORKERS = ("worker", "worker-gpu")


def test_api_and_workers_share_the_image_and_redis(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    assert api["build"] == "."
    for service in (api, *(compose["services"][name] for name in WORKERS)):
        assert service["image"] == api["image"]
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert service["environment"]["LRPSEG_REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password"
        assert service["secrets"] == ["redis_password"]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert api["command"][:2] == ["lrpseg", "api"] and "0.0.0.0" in api["command"]
    assert any(str(p).endswith(":8000") for p in api["ports"])
    assert compose["services"]["worker"]["command"] == ["lrpseg", "worker"]


def test_a_cpu_profile_runs_without_the_nvidia_runtime(compose: dict[str, Any]) -> None:
    """`docker compose --profile cpu up`: no service of that profile reserves a GPU."""
    services = compose["services"]
    started = [s for s in services.values() if "profiles" not in s or "cpu" in s["profiles"]]
    assert {name for name, s in services.items() if s in started} == {"redis", "api", "worker"}
    assert all("deploy" not in s for s in started)
    assert services["worker"]["environment"]["LRPSEG_DEVICE"] == "cpu"
    # --scale worker=N: replicas without fixed names or host ports
    assert "container_name" not in services["worker"] and "ports" not in services["worker"]


def test_the_gpu_profile_runs_one_worker_per_gpu(compose: dict[str, Any]) -> None:
    """Docker gives a `count: N` reservation the first N GPUs, so --scale would stack replicas
    on GPU 0: the GPU worker sees all GPUs and runs one supervised worker per GPU instead."""
    worker = compose["services"]["worker-gpu"]
    assert worker["profiles"] == ["gpu"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["count"] == "all" and "gpu" in device["capabilities"]
    assert (
        worker["command"] == ["lrpseg", "worker", "--workers", "0"] and worker["environment"]["LRPSEG_DEVICE"] == "cuda"
    )
    # the pool's warm-stop wait covers a whole job and fits in compose's grace period
    job_timeout = int(worker["environment"]["LRPSEG_JOB_TIMEOUT"])
    assert job_timeout <= float(worker["environment"]["LRPSEG_SHUTDOWN_GRACE"]) < seconds(worker["stop_grace_period"])


@pytest.mark.parametrize("name", WORKERS)
def test_workers_have_a_health_check_and_a_warm_stop(compose: dict[str, Any], name: str) -> None:
    worker = compose["services"][name]
    assert worker["healthcheck"]["test"] == ["CMD", "lrpseg", "worker", "--check"]
    assert worker["environment"]["LRPSEG_HEARTBEAT_FILE"].startswith("/tmp/")  # writable by the image's user
    assert seconds(worker["stop_grace_period"]) > int(worker["environment"]["LRPSEG_JOB_TIMEOUT"])
    assert worker["restart"] == "unless-stopped"


def test_the_dimse_profile_runs_the_c_store_scp(compose: dict[str, Any]) -> None:
    dimse = compose["services"]["dimse"]
    assert dimse["profiles"] == ["dimse"] and dimse["command"] == ["lrpseg", "dimse"]
    assert dimse["image"] == compose["services"]["api"]["image"]
    assert dimse["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert dimse["environment"]["LRPSEG_DIMSE_HOST"] == "0.0.0.0" and "11112:11112" in dimse["ports"]


def test_the_worker_check_command_exists() -> None:
    """What the health checks and the Kubernetes probe run is a real option of `lrpseg worker`."""
    from workers import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--check", "--workers", "0", "--device", "cuda:1"])
    assert args.check and args.workers == 0 and args.device == "cuda:1"


def seconds(duration: str) -> float:
    """A compose duration such as 330s, 5m or 1m30s."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)
