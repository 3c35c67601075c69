"""deploy/kubernetes: built with kustomize (offline), every object checked against the
Kubernetes schemas (kubernetes-validate ships them) and the ScaledObject against KEDA's types,
then against what the service needs (probes, GPUs, queue name, warm shutdown)."""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from core.settings import Settings
from service.routers import health
from workers import cli

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "kubernetes"
KEDA_SCHEMA = json.loads((Path(__file__).parent / "keda_scaledobject.schema.json").read_text())
# The oldest Kubernetes still in vendor support when this was written, and the newest schemas shipped.
VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())

Objects = dict[tuple[str, str], dict[str, Any]]


def kustomize_command() -> list[str]:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize", str(BASE)]
    if shutil.which("kustomize"):
        return ["kustomize", "build", str(BASE)]
    pytest.skip("needs kubectl (Debian: apt-get install kubernetes-client) or kustomize; .ci/run installs it")


@pytest.fixture(scope="module")
def built() -> list[dict[str, Any]]:
    out = subprocess.run(kustomize_command(), capture_output=True, text=True, timeout=120, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module")
def objects(built: list[dict[str, Any]]) -> Objects:
    by_key = {(doc["kind"], doc["metadata"]["name"]): doc for doc in built}
    assert len(by_key) == len(built), "two objects of one kind share a name"
    return by_key


def container(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    (only,) = objects[(kind, name)]["spec"]["template"]["spec"]["containers"]
    return only


def config(objects: Objects) -> dict[str, str]:
    return objects[("ConfigMap", "lrpseg-config")]["data"]


def test_the_base_builds_the_whole_service(objects: Objects) -> None:
    assert set(objects) == {
        ("ConfigMap", "lrpseg-config"),
        ("Service", "redis"),
        ("StatefulSet", "redis"),
        ("Service", "lrpseg-api"),
        ("Deployment", "lrpseg-api"),
        ("Deployment", "lrpseg-worker"),
        ("PodDisruptionBudget", "lrpseg-api"),
        ("PodDisruptionBudget", "lrpseg-worker"),
        ("ScaledObject", "lrpseg-worker"),
    }


@pytest.mark.parametrize("version", VERSIONS)
def test_every_core_object_matches_the_kubernetes_schema(built: list[dict[str, Any]], version: str) -> None:
    for doc in built:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue
        kubernetes_validate.validate(doc, version, strict=True)  # strict: unknown fields fail


def test_the_schema_check_can_fail(objects: Objects) -> None:
    """A misspelt field and a wrong type are caught, so a pass above means something."""
    for mutate in (
        lambda d: d["spec"]["template"]["spec"]["containers"][0].update(livenesProbe={}),
        lambda d: d["spec"].update(replicas="two"),
    ):
        broken = copy.deepcopy(objects[("Deployment", "lrpseg-worker")])
        mutate(broken)
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, VERSIONS[0], strict=True)
    scaled = copy.deepcopy(objects[("ScaledObject", "lrpseg-worker")])
    scaled["spec"]["triggers"][0]["metadata"]["listLength"] = 4  # KEDA wants strings
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(scaled, KEDA_SCHEMA)


def test_keda_scales_the_worker_deployment_on_the_rq_queue(objects: Objects) -> None:
    scaled = objects[("ScaledObject", "lrpseg-worker")]
    jsonschema.validate(scaled, KEDA_SCHEMA)
    target = scaled["spec"]["scaleTargetRef"]
    assert (target.get("kind", "Deployment"), target["name"]) in objects
    assert target["name"] == "lrpseg-worker" and target.get("apiVersion", "apps/v1") == "apps/v1"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    meta = trigger["metadata"]
    # the list RQ keeps the queue in, on the Redis the workers use
    assert meta["listName"] == f"rq:queue:{config(objects)['LRPSEG_QUEUE_NAME']}"
    redis_url = urlsplit(config(objects)["REDIS_URL"])
    assert meta["address"] == f"{redis_url.hostname}:{redis_url.port}"
    assert meta["databaseIndex"] == redis_url.path.strip("/")
    assert ("Service", redis_url.hostname) in objects
    assert int(meta["listLength"]) >= 1 and int(meta["activationListLength"]) >= 0
    spec = scaled["spec"]
    assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]


def test_workers_run_lrpseg_worker_on_one_gpu_each(objects: Objects) -> None:
    worker = container(objects, "Deployment", "lrpseg-worker")
    assert worker["command"] == ["lrpseg", "worker"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["LRPSEG_DEVICE"] in ("cuda", "cuda:0")  # the device plugin shows the pod's GPU as cuda:0
    assert Settings(device=env["LRPSEG_DEVICE"]).device == env["LRPSEG_DEVICE"]


def test_the_worker_liveness_probe_is_a_real_check(objects: Objects) -> None:
    worker = container(objects, "Deployment", "lrpseg-worker")
    for probe in ("startupProbe", "livenessProbe"):
        command = worker[probe]["exec"]["command"]
        assert command[:2] == ["lrpseg", "worker"]
        parser = argparse.ArgumentParser()
        cli.add_arguments(parser)
        assert parser.parse_args(command[2:]).check
    heartbeat = Path(config(objects)["LRPSEG_HEARTBEAT_FILE"])
    mounts = {m["mountPath"] for m in worker["volumeMounts"]}
    assert any(heartbeat.is_relative_to(m) for m in mounts)  # writable under a read-only root
    # the probe's patience exceeds the staleness it detects (3 heartbeats)
    live = worker["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] > Settings().worker_max_age


def test_workers_get_a_warm_shutdown(objects: Objects) -> None:
    pod = objects[("Deployment", "lrpseg-worker")]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > int(config(objects)["LRPSEG_JOB_TIMEOUT"])


def test_api_probes_use_the_health_routes(objects: Objects) -> None:
    api = container(objects, "Deployment", "lrpseg-api")
    assert api["command"][:2] == ["lrpseg", "api"] and "0.0.0.0" in api["command"]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    ready = urlsplit(api["readinessProbe"]["httpGet"]["path"])
    assert ready.path == "/readyz" and ready.query == "scope=api"  # no worker needed: KEDA may scale to 0
    routes = {getattr(r, "path", None) for r in health.router.routes}
    assert {"/healthz", "/readyz"} <= routes
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert api[probe]["httpGet"]["port"] in ports
    keys = next(e for e in api["env"] if e["name"] == "LRPSEG_API_KEYS")
    assert keys["valueFrom"]["secretKeyRef"]["name"]  # from a Secret, never in the manifests


def test_selectors_match_their_pods(objects: Objects) -> None:
    pods = {
        name: objects[(kind, name)]["spec"]["template"]["metadata"]["labels"]
        for kind, name in objects
        if kind in ("Deployment", "StatefulSet")
    }

    def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
        return selector.items() <= labels.items()

    for (kind, name), doc in objects.items():
        if kind == "Service":
            assert sum(selects(doc["spec"]["selector"], p) for p in pods.values()) == 1, name
        if kind == "PodDisruptionBudget":
            assert selects(doc["spec"]["selector"]["matchLabels"], pods[name]), name
        if kind in ("Deployment", "StatefulSet"):
            assert selects(doc["spec"]["selector"]["matchLabels"], pods[name]), name


def test_api_and_workers_share_one_image_and_config(objects: Objects) -> None:
    api, worker = container(objects, "Deployment", "lrpseg-api"), container(objects, "Deployment", "lrpseg-worker")
    assert api["image"] == worker["image"] == "lrpseg:latest"
    for c in (api, worker):
        assert {"configMapRef": {"name": "lrpseg-config"}} in c["envFrom"]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
    pod = objects[("Deployment", "lrpseg-worker")]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    Settings(artifact_store=config(objects)["LRPSEG_ARTIFACT_STORE"])  # a store the service accepts


def test_redis_persists_and_never_evicts(objects: Objects) -> None:
    args = container(objects, "StatefulSet", "redis")["args"]
    flags = dict(zip(args[0::2], args[1::2]))
    assert flags == {"--appendonly": "yes", "--appendfsync": "always", "--maxmemory-policy": "noeviction"}
