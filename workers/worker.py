"""The RQ worker: runs jobs in its own process (no fork per job), models loaded once."""

from __future__ import annotations

from types import TracebackType

from redis import Redis
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer

from lrpseg.registry import Registry
from service.settings import Settings
from workers import runtime


def _no_retry_for_errors(job: Job, exc_type: type[BaseException], exc: BaseException, tb: TracebackType) -> bool:
    """A job that raised fails for good: Retry is meant for jobs whose worker died (abandoned)."""
    job.retries_left = 0
    return True  # go on to the default handler


class ModelWorker(SimpleWorker):
    """A SimpleWorker with the process's WorkerRuntime (models loaded, device chosen); retires it on exit."""

    def __init__(self, queues: list[Queue], *, rt: runtime.WorkerRuntime, connection: Redis) -> None:
        super().__init__(
            queues,
            name=rt.name,
            connection=connection,
            serializer=JSONSerializer,
            exception_handlers=[_no_retry_for_errors],
            log_job_description=False,  # descriptions are harmless, but keep logs to ids
            default_result_ttl=rt.settings.result_ttl,
        )
        self.runtime = rt

    def teardown(self) -> None:
        super().teardown()
        self.runtime.stop()


def build_worker(
    settings: Settings,
    *,
    connection: Redis | None = None,
    registry: Registry | None = None,
    name: str | None = None,
    heartbeat: bool = True,
) -> ModelWorker:
    connection = connection if connection is not None else Redis.from_url(settings.require_redis_url())
    rt = runtime.start(settings, connection=connection, registry=registry, name=name, heartbeat=heartbeat)
    queue = Queue(settings.queue_name, connection=connection, serializer=JSONSerializer)
    return ModelWorker([queue], rt=rt, connection=connection)
