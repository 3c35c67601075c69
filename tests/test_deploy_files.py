"""Dockerfile, docker-compose.yml and .dockerignore: parsed and checked for what production needs."""

from __future__ import annotations

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


def test_api_and_worker_share_the_image_and_redis(compose: dict[str, Any]) -> None:
    api, worker = compose["services"]["api"], compose["services"]["worker"]
    assert api["image"] == worker["image"] and api["build"] == "."
    for service in (api, worker):
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert service["environment"]["LRPSEG_REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password"
        assert service["secrets"] == ["redis_password"]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert api["command"][:2] == ["lrpseg", "api"] and "0.0.0.0" in api["command"]
    assert any(str(p).endswith(":8000") for p in api["ports"])
    assert worker["command"] == ["lrpseg", "worker"]


def test_worker_reserves_a_gpu_and_can_scale(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] and d["driver"] == "nvidia" for d in devices)
    # --scale worker=N needs replicas without fixed names or host ports
    assert "container_name" not in worker and "ports" not in worker
    assert worker.get("stop_grace_period")
