"""The FastAPI application: create_app() wires settings, Redis, the queue and the routers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

import lrpseg
from lrpseg.registry import Registry, default_registry
from service import errors
from service.metrics import ServiceMetrics
from service.middleware import BodyLimit, RequestContext
from service.routers import health, jobs, models
from service.settings import Settings, get_settings
from service.stats import Stats
from service.store import Store

DESCRIPTION = """Segmentation and whole-output LRP explanations as a service.

Submit an image to `POST /v1/jobs` (or `POST /v1/explain?wait=S` to wait for the answer),
poll the job's URL, fetch its artifacts. Errors are `application/problem+json` with a
`request_id`; send `X-Request-ID` to choose it.
"""


def create_app(
    settings: Settings | None = None, *, registry: Registry | None = None, connection: Redis | None = None
) -> FastAPI:
    settings = settings or get_settings()
    redis = connection if connection is not None else Redis.from_url(settings.require_redis_url())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if connection is None:
            redis.close()

    app = FastAPI(title="lrpseg", version=lrpseg.__version__, description=DESCRIPTION, lifespan=lifespan)
    metrics = ServiceMetrics()
    queue = Queue(settings.queue_name, connection=redis, serializer=JSONSerializer)
    stats = Stats(redis, settings.key_prefix)
    metrics.attach_queue(queue, stats, settings.worker_max_age)
    app.state.settings = settings
    app.state.redis = redis
    app.state.queue = queue
    app.state.store = Store(redis, settings.key_prefix)
    app.state.stats = stats
    app.state.metrics = metrics
    app.state.registry = registry if registry is not None else default_registry()  # fails early without models

    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes + 1024 * 1024)  # slack for multipart framing
    app.add_middleware(RequestContext, metrics=metrics)
    for router in (jobs.router, models.router, health.router):
        app.include_router(router)
    return app
