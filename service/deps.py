"""FastAPI dependencies, declared once as Annotated aliases.

They are `async def` because they only read app state: a sync dependency would cost a
thread-pool hop per request each.

`get_principal` authenticates (API key in `X-API-Key` or `Authorization: Bearer`, see
service/auth.py) and takes a rate-limit token; every `/v1` router depends on it (app.py), so
a new router is covered without doing anything. It is a plain `def` because the rate limit
asks Redis: in a thread, a slow Redis cannot stall the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from redis import Redis
from rq import Queue

from core.settings import Settings
from core.stats import Stats
from core.store import Store
from lrpseg.registry import Registry
from service.auth import ANONYMOUS, KeyStore
from service.errors import ApiError
from service.prometheus import ServiceMetrics
from service.ratelimit import JobSlots, RateLimiter


@dataclass(frozen=True)
class Principal:
    id: str = ANONYMOUS


async def get_settings(request: Request) -> Settings:
    value: Settings = request.app.state.settings
    return value


async def get_redis(request: Request) -> Redis:
    value: Redis = request.app.state.redis
    return value


async def get_queue(request: Request) -> Queue:
    value: Queue = request.app.state.queue
    return value


async def get_store(request: Request) -> Store:
    value: Store = request.app.state.store
    return value


async def get_stats(request: Request) -> Stats:
    value: Stats = request.app.state.stats
    return value


async def get_metrics(request: Request) -> ServiceMetrics:
    value: ServiceMetrics = request.app.state.metrics
    return value


async def get_registry(request: Request) -> Registry:
    value: Registry = request.app.state.registry
    return value


async def get_job_slots(request: Request) -> JobSlots:
    value: JobSlots = request.app.state.job_slots
    return value


async def get_request_id(request: Request) -> str:
    value: str = request.state.request_id
    return value


API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key (lrpseg keys new NAME)")
BEARER = HTTPBearer(auto_error=False, description="the same API key as a bearer token")
REALM = 'Bearer realm="lrpseg"'


def _unauthorized(detail: str, error: str | None = None) -> ApiError:
    challenge = REALM + (f', error="{error}"' if error else "")
    return ApiError(401, "Unauthorized", detail, code="unauthorized", headers={"WWW-Authenticate": challenge})


def authenticate(
    request: Request,
    api_key: str | None,
    credentials: HTTPAuthorizationCredentials | None,
) -> Principal:
    """The key's owner, or 401. With auth off (localhost default), everyone is anonymous."""
    keys: KeyStore = request.app.state.keys
    if not keys.required:
        principal = Principal()
    else:
        token = api_key if api_key is not None else (credentials.credentials if credentials is not None else None)
        if not token:
            raise _unauthorized("send an API key in X-API-Key or Authorization: Bearer")
        name = keys.lookup(token)
        if name is None:
            raise _unauthorized("the API key is not valid", "invalid_token")
        principal = Principal(name)
    request.state.principal = principal.id  # for the access log
    return principal


def get_principal(
    request: Request,
    api_key: Annotated[str | None, Security(API_KEY_HEADER)] = None,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
) -> Principal:
    """Who is calling (401 without a valid key), after taking one of its rate-limit tokens (429).
    Requests without a valid key are metered too, per client address (key guessing, 401 floods)."""
    try:
        principal = authenticate(request, api_key, credentials)
    except ApiError as exc:
        unauth: RateLimiter = request.app.state.unauth_limiter
        if exc.status == 401 and unauth.enabled:
            address = request.client.host if request.client is not None else "unknown"
            decision = unauth.hit(address)
            if not decision.allowed:
                raise ApiError(
                    429,
                    "Too many requests",
                    f"too many requests without a valid API key from {address}; retry in {decision.retry_after} s",
                    code="rate-limited",
                    headers={"Retry-After": str(decision.retry_after)},
                ) from None
        raise
    limiter: RateLimiter = request.app.state.rate_limiter
    if limiter.enabled:
        decision = limiter.hit(principal.id)
        request.state.rate_headers = decision.headers()
        if not decision.allowed:
            raise ApiError(
                429,
                "Too many requests",
                f"key {principal.id!r} exceeded {limiter.rate:g} requests/s (burst {limiter.burst}); "
                f"retry in {decision.retry_after} s",
                code="rate-limited",
                headers=decision.headers(),
            )
    return principal


def metrics_access(
    request: Request,
    api_key: Annotated[str | None, Security(API_KEY_HEADER)] = None,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
) -> None:
    """/metrics is open unless `metrics_auth` is set; then any valid API key may scrape."""
    if request.app.state.settings.metrics_auth:
        authenticate(request, api_key, credentials)


SettingsDep = Annotated[Settings, Depends(get_settings)]
RedisDep = Annotated[Redis, Depends(get_redis)]
QueueDep = Annotated[Queue, Depends(get_queue)]
StoreDep = Annotated[Store, Depends(get_store)]
StatsDep = Annotated[Stats, Depends(get_stats)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
RequestIdDep = Annotated[str, Depends(get_request_id)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
JobSlotsDep = Annotated[JobSlots, Depends(get_job_slots)]
