"""The FastAPI application: create_app() wires settings, Redis, the queue and the routers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

import lrpseg
from core.artifacts import open_artifacts
from core.security import is_loopback
from core.settings import Settings, get_settings
from core.stats import Stats
from core.store import Store
from lrpseg.registry import Registry, default_registry
from pacs.intake import SeriesIntake
from service import errors
from service.auth import KeyStore
from service.connection import api_redis
from service.deps import get_principal
from service.middleware import BodyLimit, RequestContext
from service.prometheus import ServiceMetrics
from service.ratelimit import JobSlots, RateLimiter
from service.routers import api_docs, batches, dicomweb, health, inference_protocol, jobs, models, viewer
from service.series_jobs import SeriesJobs, sweep_forever, warn_unknown_route_models

DESCRIPTION = """Segmentation and whole-output LRP explanations as a service.

Submit an image to `POST /v1/jobs` (or `POST /v1/explain?wait=S` to wait for the answer),
poll the job's URL, fetch its artifacts. Errors are `application/problem+json` with a
`request_id`; send `X-Request-ID` to choose it.
"""


def create_app(
    settings: Settings | None = None, *, registry: Registry | None = None, connection: Redis | None = None
) -> FastAPI:
    settings = settings or get_settings()
    redis = connection if connection is not None else api_redis(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # received DICOM series become jobs here (service/series_jobs.py says why in the API)
        sweeper = asyncio.create_task(sweep_forever(app.state.series_jobs, settings.series_sweep_interval))
        yield
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        if connection is None:
            redis.close()

    # /docs and /redoc from the Swagger UI and ReDoc files fastapi-offline ships: no CDN, works air-gapped
    app = FastAPIOffline(
        title="lrpseg", version=lrpseg.__version__, description=DESCRIPTION, lifespan=lifespan, redoc_url=None
    )
    app.include_router(api_docs.router)  # /redoc: the same files, under a CSP (service/routers/api_docs.py)
    metrics = ServiceMetrics()
    queue = Queue(settings.queue_name, connection=redis, serializer=JSONSerializer)
    stats = Stats(redis, settings.key_prefix)
    metrics.attach_queue(queue, stats, settings.worker_max_age)
    app.state.settings = settings
    app.state.redis = redis
    app.state.queue = queue
    keys = Redis.from_url(settings.key_redis_url) if settings.key_redis_url else None
    artifacts = open_artifacts(settings.artifact_store, redis, settings.key_prefix)
    app.state.store = Store(redis, settings.key_prefix, artifacts, keys=keys)
    app.state.stats = stats
    app.state.metrics = metrics
    app.state.registry = registry if registry is not None else default_registry()  # fails early without models
    app.state.keys = KeyStore.from_settings(settings)
    app.state.rate_limiter = RateLimiter(redis, settings.key_prefix, settings.rate_limit, settings.rate_burst)
    app.state.unauth_limiter = RateLimiter(  # requests without a valid key: per client address
        redis, f"{settings.key_prefix}:unauth", settings.unauth_rate_limit, settings.unauth_rate_burst
    )
    app.state.job_slots = JobSlots(redis, settings.key_prefix, settings.max_jobs_per_key)
    warn_unknown_route_models(settings, app.state.registry)
    app.state.series_jobs = SeriesJobs(
        SeriesIntake(redis, settings, keys),
        settings,
        app.state.registry,
        queue,
        app.state.store,
        metrics,
        app.state.job_slots,
    )
    _warn_if_open(settings, app.state.keys)

    errors.install(app)
    app.add_middleware(
        BodyLimit, max_bytes=settings.max_upload_bytes + 1024 * 1024, timeout=settings.body_timeout
    )  # slack for multipart framing
    if settings.cors_origins:  # off by default: browsers on other origins get no CORS headers
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["X-API-Key", "Authorization", "Content-Type", "X-Request-ID", "Idempotency-Key"],
            expose_headers=["Location", "Retry-After", "X-Request-ID", *RATE_HEADERS],
        )
    app.add_middleware(RequestContext, metrics=metrics, access_log=settings.access_log)
    describe = app.openapi  # FastAPI's, which caches the document in app.openapi_schema
    app.openapi = lambda: app.openapi_schema or inference_protocol.add_schemas(describe())  # type: ignore[method-assign]
    routers = (
        jobs.router,
        batches.router,
        models.router,
        health.router,
        inference_protocol.router,
        viewer.router,
        dicomweb.router,
    )
    for router in routers:  # /dicomweb (STOW-RS) is authenticated and rate limited like /v1
        authenticated = router.prefix.startswith(("/v1", "/dicomweb"))
        app.include_router(router, dependencies=V1_AUTH if authenticated else None)
    return app


log = logging.getLogger("lrpseg.service")
V1_AUTH = [Depends(get_principal)]  # every /v1 router: a key (when auth is on) and a rate-limit token
RATE_HEADERS = ["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"]


def _warn_if_open(settings: Settings, keys: KeyStore) -> None:
    if keys.required:
        log.info("API keys required: %d configured", len(keys.keys))
    elif settings.auth == "off" and not is_loopback(settings.host):
        log.warning(
            "AUTHENTICATION IS OFF (LRPSEG_AUTH=off) and the API listens on %s: anyone who can reach it "
            "can submit and read every job",
            settings.host,
        )
    else:
        log.warning("authentication is off: no API keys configured; the API listens on %s only", settings.host)
