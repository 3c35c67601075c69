"""FastAPI dependencies, declared once as Annotated aliases.

They are `async def` because they only read app state: a sync dependency would cost a
thread-pool hop per request each.

`get_principal` is the hook where API keys will slot in: today everyone is "anonymous";
jobs record their owner and are only visible to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from redis import Redis
from rq import Queue

from lrpseg.registry import Registry
from service.metrics import ServiceMetrics
from service.settings import Settings
from service.stats import Stats
from service.store import Store


@dataclass(frozen=True)
class Principal:
    id: str = "anonymous"


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_redis(request: Request) -> Redis:
    return request.app.state.redis


async def get_queue(request: Request) -> Queue:
    return request.app.state.queue


async def get_store(request: Request) -> Store:
    return request.app.state.store


async def get_stats(request: Request) -> Stats:
    return request.app.state.stats


async def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


async def get_registry(request: Request) -> Registry:
    return request.app.state.registry


async def get_request_id(request: Request) -> str:
    return request.state.request_id


async def get_principal(request: Request) -> Principal:
    """Who is calling. Replace with API-key lookup (hashed keys) when auth lands."""
    return Principal()


SettingsDep = Annotated[Settings, Depends(get_settings)]
RedisDep = Annotated[Redis, Depends(get_redis)]
QueueDep = Annotated[Queue, Depends(get_queue)]
StoreDep = Annotated[Store, Depends(get_store)]
StatsDep = Annotated[Stats, Depends(get_stats)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
RequestIdDep = Annotated[str, Depends(get_request_id)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
