"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

import lrpseg
from core.stats import WorkerInfo
from lrpseg.registry import Registry
from schemas.health import Check, Health, Readiness
from service.deps import MetricsDep, RedisDep, RegistryDep, SettingsDep, StatsDep, metrics_access

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process answers. Says nothing about Redis or workers (that is /readyz)."""
    return Health(version=lrpseg.__version__)


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(
    redis: RedisDep,
    stats: StatsDep,
    registry: RegistryDep,
    settings: SettingsDep,
    scope: Annotated[
        Literal["service", "api"],
        Query(description="service: Redis, a live worker, its models; api: only what this API process needs (Redis)"),
    ] = "service",
) -> JSONResponse:
    """Ready when Redis answers, a worker is alive and it has the models loaded. With
    `scope=api`, ready when this API process can accept jobs: the probe of an orchestrator that
    scales workers from the queue (Kubernetes + KEDA), where no worker is a normal state."""
    checks: dict[str, Check] = {}
    try:
        redis.ping()
        checks["redis"] = Check(ok=True, detail="reachable")
    except Exception as exc:
        checks["redis"] = Check(ok=False, detail=f"unreachable: {type(exc).__name__}")
        return _readiness(checks, settings.retry_after)
    if scope == "api":
        return _readiness(checks, settings.retry_after)
    workers = stats.live_workers(settings.worker_max_age)
    checks["workers"] = Check(ok=bool(workers), detail=f"{len(workers)} alive" if workers else "no worker alive")
    try:
        checks["models"] = _models_check(registry, workers)
    except Exception as exc:
        checks["models"] = Check(ok=False, detail=f"registry failed: {type(exc).__name__}")
    return _readiness(checks, settings.retry_after)


def _models_check(registry: Registry, workers: list[WorkerInfo]) -> Check:
    wanted = {info.id for info in registry.list()}
    if not wanted:
        return Check(ok=False, detail="the registry lists no model")
    default = registry.get(registry.default_id).id
    loaded: set[str] = set().union(*(w.models for w in workers))
    failed = sorted({m for w in workers for m in w.errors})
    if failed:
        return Check(ok=False, detail="failed to load: " + ", ".join(failed))
    if default not in loaded:
        return Check(ok=False, detail=f"no live worker has the default model {default} loaded")
    return Check(ok=True, detail=f"{len(loaded & wanted)} of {len(wanted)} models loaded")


def _readiness(checks: dict[str, Check], retry_after: int) -> JSONResponse:
    body = Readiness(ready=all(c.ok for c in checks.values()), checks=checks)
    if body.ready:
        return JSONResponse(body.model_dump())
    return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": str(retry_after)})


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    dependencies=[Depends(metrics_access)],  # open unless LRPSEG_METRICS_AUTH
)
def metrics(service_metrics: MetricsDep) -> Response:
    return Response(service_metrics.render(), media_type=CONTENT_TYPE_LATEST)
