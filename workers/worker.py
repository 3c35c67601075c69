"""The RQ worker: runs jobs in its own process (no fork per job), models loaded once."""

from __future__ import annotations

from types import TracebackType

from redis import Redis
from rq import Queue, SimpleWorker
from rq.executions import Execution
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.utils import now
from rq.worker_registration import clean_worker_registry

from lrpseg.registry import Registry
from service import recovery
from service.settings import Settings
from workers import faults, runtime


def _no_retry_for_errors(job: Job, exc_type: type[BaseException], exc: BaseException, tb: TracebackType) -> bool:
    """A job that raised fails for good: Retry is meant for jobs whose worker died (abandoned)
    or that a cold shutdown interrupted."""
    if not faults.keep_retries_for(exc_type):
        job.retries_left = 0
    return True  # go on to the default handler


class ModelWorker(SimpleWorker):
    """A SimpleWorker with the process's WorkerRuntime (models loaded, device chosen); retires it on exit."""

    max_connection_wait_time = 5.0  # Redis away: retry at least this often (RQ: 60 s), to resume soon

    def __init__(self, queues: list[Queue], *, rt: runtime.WorkerRuntime, connection: Redis) -> None:
        super().__init__(
            queues,
            name=rt.name,
            connection=connection,
            serializer=JSONSerializer,
            exception_handlers=[_no_retry_for_errors, recovery.abandoned_handler(rt.store, rt.stats)],
            log_job_description=False,  # descriptions are harmless, but keep logs to ids
            default_result_ttl=rt.settings.result_ttl,
            # An idle worker blocks in dequeue for worker_ttl - 15 s and cleans up only between
            # blocks: this makes it clean up every maintenance_interval s (docs/operations.md).
            maintenance_interval=rt.settings.maintenance_interval,
            worker_ttl=rt.settings.maintenance_interval + 15,
        )
        self.runtime = rt
        self.stopping = False  # a warm or cold stop was asked for (SIGTERM/SIGINT)
        self.jobs_done = 0

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            self.runtime.stop()

    # ---- faults (docs/operations.md) ---------------------------------------------------

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """The claim's lifetime: short, since ClaimKeeper renews it while the job runs."""
        return self.runtime.settings.job_lost_after

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        settings = self.runtime.settings
        with faults.ClaimKeeper(self, job, execution, settings.claim_renewal, tick=self.reap_lost_jobs):
            ok = super().perform_job(job, queue, execution)
        self.jobs_done += 1
        if not ok and faults.failed_for_memory(job):
            faults.release_device_memory()
        return ok

    def clean_registries(self) -> None:
        """RQ's clean-up (lost jobs re-queued or failed), under a lock that expires quickly."""
        lock_ttl = self.runtime.settings.maintenance_interval
        for queue in self.queues:

            def after(queue: Queue = queue) -> None:
                clean_worker_registry(queue)
                queue.intermediate_queue.cleanup(self, queue)

            recovery.clean_queue(queue, self._exc_handlers, lock_ttl, after=after)
        self.last_cleaned_at = now()

    def reap_lost_jobs(self) -> None:
        """From ClaimKeeper's thread while a job runs: the started-registry part of the clean-up."""
        if self.should_run_maintenance_tasks:
            lock_ttl = self.runtime.settings.maintenance_interval
            for queue in self.queues:
                recovery.clean_queue(queue, self._exc_handlers, lock_ttl)
            self.last_cleaned_at = now()

    def handle_warm_shutdown_request(self) -> None:
        self.stopping = True
        super().handle_warm_shutdown_request()


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
