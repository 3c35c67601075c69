"""The RQ worker: runs jobs in its own process (no fork per job), models loaded once."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import TracebackType
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.executions import Execution
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException
from rq.utils import now
from rq.worker import WorkerStatus
from rq.worker_registration import clean_worker_registry

from core import claims, logs, recovery
from core.connect import connect
from core.meta import BATCH_KEY, REQUEST_ID
from core.settings import Settings
from lrpseg.registry import Registry
from workers import faults, job_inputs, runtime, shared_pass


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
        connection = claims.fenced_connection(connection)  # end writes commit only under the job's claim
        super().__init__(
            queues,
            name=rt.name,
            connection=connection,
            serializer=JSONSerializer,
            exception_handlers=[_no_retry_for_errors],
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

    def unsubscribe(self) -> None:
        """RQ's unsubscribe, in the order that ends the pubsub thread at once. RQ unsubscribes
        first: the thread, back in its loop before the stop, then waits up to RQ's sleep_time
        (60 s) for a subscription, and since redis-py 8.2 `stop()` joins it without a limit; a
        warm stop hung past the grace period. Stopped first, the thread leaves its loop on the
        unsubscribe's reply; the join stays bounded (1 s) as RQ meant."""
        thread = self.pubsub_thread
        if thread is None:
            return
        if thread.is_alive():
            try:
                thread.stop(timeout=0)  # redis-py >= 8.2: no join here
            except TypeError:  # older redis-py: stop() only clears the flag
                thread.stop()
            with suppress(RedisError):
                self.pubsub.unsubscribe()
            thread.join(timeout=1)
        self.pubsub.close()

    # ---- faults (docs/operations.md) ---------------------------------------------------

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """The claim's lifetime: short, since ClaimKeeper renews it while the job runs."""
        return self.runtime.settings.job_lost_after

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        """Run the job only under its claim (core.claims): refused if it ended, was deleted or
        another run owns it; its end is recorded only while the claim is still ours."""
        rt, settings = self.runtime, self.runtime.settings
        keys = recovery.job_keys(queue, job.id)
        token = rt.claim_tokens.get(job.id) or claims.new_token(self.name)  # run_batch claims ahead
        verdict = rt.claims.claim(job.id, keys, token)
        if verdict != "ok":
            self.log.warning("Worker %s: job %s not run (%s)", self.name, job.id, verdict)
            self.drop_execution(job, queue, execution)
            return False
        rt.claim_tokens[job.id] = token
        keeper = faults.ClaimKeeper(
            self,
            job,
            execution,
            settings.claim_renewal,
            tick=self.reap_lost_jobs,
            renew=lambda: rt.claims.renew(job.id, token),
        )
        try:
            with logs.job_context(job.id, (job.meta or {}).get(REQUEST_ID)), keeper:  # ids on every log line
                ok = super().perform_job(job, queue, execution)
        except claims.ClaimLost:
            self.log.warning("Worker %s: job %s is owned by a later run; this run's end was dropped", self.name, job.id)
            self.drop_execution(job, queue, execution)
            ok = False
        finally:
            rt.claim_tokens.pop(job.id, None)
            rt.claims.release(job.id, keys, token)
        self.jobs_done += 1
        if not ok and faults.failed_for_memory(job):
            faults.release_device_memory()
        return ok

    def drop_execution(self, job: Job, queue: Queue, execution: Execution) -> None:
        """Forget a run that will record nothing: its started-registry entry and intermediate copy."""
        with self.connection.pipeline() as pipe:
            self.cleanup_execution(job, pipeline=pipe, execution=execution)
            pipe.lrem(queue.intermediate_queue_key, 0, job.id)
            pipe.execute()

    def _finalize_success(self, job: Job, queue: Queue, execution: Execution, return_value: Any) -> None:
        with self._fenced(job):
            super()._finalize_success(job, queue, execution, return_value)

    def _finalize_failure(self, job: Job, queue: Queue, execution: Execution, exc_info: Any) -> None:
        with self._fenced(job):
            super()._finalize_failure(job, queue, execution, exc_info)

    @contextmanager
    def _fenced(self, job: Job) -> Iterator[None]:
        """RQ's end writes (status, result, registries, retry) commit only under our claim; the end
        hooks and exception handlers do not even run once another run owns the job."""
        rt = self.runtime
        token = rt.claim_tokens.get(job.id)
        if token is None:
            yield
            return
        if not rt.claims.holds(job.id, token):
            raise claims.ClaimLost(job.id)
        with claims.fence(rt.claims, job.id, token):
            yield

    def clean_registries(self) -> None:
        """RQ's clean-up (lost jobs re-queued or failed), under a lock that expires quickly."""
        lock_ttl = self.runtime.settings.maintenance_interval
        for queue in self.queues:

            def after(queue: Queue = queue) -> None:
                clean_worker_registry(queue)  # (not RQ's intermediate clean-up: the Reaper decides those jobs)

            recovery.clean_queue(queue, self.reaper(queue), lock_ttl, after=after)
        self.sweep_artifacts()
        self.last_cleaned_at = now()

    def reaper(self, queue: Queue) -> recovery.Reaper:
        rt = self.runtime
        return recovery.Reaper(queue, rt.store, rt.stats, rt.settings.job_lost_after)

    def sweep_artifacts(self) -> None:
        """File/S3 artifacts past their result TTL are deleted here (Redis expires its own)."""
        try:
            swept = self.runtime.store.sweep_expired_artifacts()
        except Exception as exc:  # an object store hiccup must not stop the worker; the next round retries
            self.log.warning("Worker %s: artifact sweep failed (%s)", self.name, type(exc).__name__)
            return
        if swept:
            self.log.info("Worker %s: deleted the expired artifacts of %d job(s)", self.name, swept)

    def reap_lost_jobs(self) -> None:
        """From ClaimKeeper's thread while a job runs: the started-registry part of the clean-up."""
        if self.should_run_maintenance_tasks:
            lock_ttl = self.runtime.settings.maintenance_interval
            for queue in self.queues:
                recovery.clean_queue(queue, self.reaper(queue), lock_ttl)
            self.last_cleaned_at = now()

    def handle_warm_shutdown_request(self) -> None:
        self.stopping = True
        super().handle_warm_shutdown_request()

    # ---- batching (workers/shared_pass.py) ------------------------------------------------

    def execute_job(self, job: Job, queue: Queue) -> None:
        """A job with a batch key takes compatible queued jobs along (batch_max); each member
        then runs its own RQ lifecycle (perform_job), finishing from its share of one pass."""
        key = (job.meta or {}).get(BATCH_KEY)
        limit = self.runtime.settings.batch_max - 1
        if not key or limit < 1:
            super().execute_job(job, queue)
            return
        members = self.claim_batch(job, queue, key, limit)
        if len(members) == 1:
            self.perform_job(job, queue, members[0].execution)
        else:
            self.run_batch(members, queue)
        self.set_state(WorkerStatus.IDLE)

    def claim_batch(self, job: Job, queue: Queue, key: str, limit: int) -> list[shared_pass.Member]:
        """The dequeued job's execution (as SimpleWorker makes it) and its claimed companions."""
        execution = self.prepare_execution(job)
        members = [shared_pass.Member(job, execution), *shared_pass.claim(self, queue, key, limit)]
        if len(members) > 1:  # started for the pass like its companions: a DELETE meanwhile only marks it
            self.prepare_job_execution(job, remove_from_intermediate_queue=len(self.queues) == 1)
        return members

    def run_batch(self, members: list[shared_pass.Member], queue: Queue) -> None:
        """The shared pass under the members' shortest timeout (if it fails, each runs alone), then
        every member's own run. Claims are renewed until each member's run takes over."""
        rt, settings = self.runtime, self.runtime.settings
        members = self.claim_members(members, queue)  # held through the pass, then by each member's run
        if not members:
            return
        ids = [m.job.id for m in members]
        keepers = {
            m.job.id: faults.ClaimKeeper(
                self,
                m.job,
                m.execution,
                settings.claim_renewal,
                renew=functools.partial(rt.claims.renew, m.job.id, rt.claim_tokens[m.job.id]),
            )
            for m in members
        }
        for keeper in keepers.values():
            keeper.__enter__()
        try:
            timeout = min(m.job.timeout or queue.DEFAULT_TIMEOUT for m in members)
            try:
                with self.death_penalty_class(timeout, JobTimeoutException, job_id=members[0].job.id):
                    size = shared_pass.run_pass(self.runtime, members, job_inputs.load)
                self.log.info("Worker %s: batch of %d jobs shared one pass (%d claimed)", self.name, size, len(ids))
            except Exception as exc:
                shared_pass.forget(ids)
                reason = type(exc).__name__
                self.log.warning("Worker %s: a batch pass failed (%s); its jobs run one by one", self.name, reason)
            for member in members:
                keepers.pop(member.job.id).__exit__(None, None, None)
                self.perform_job(member.job, queue, member.execution)
                self.heartbeat()
        finally:
            for keeper in keepers.values():
                keeper.__exit__(None, None, None)
            shared_pass.forget(ids)
            for member in members:  # members whose own run never came (it pops and releases its claim)
                token = rt.claim_tokens.pop(member.job.id, None)
                if token is not None:
                    rt.claims.release(member.job.id, recovery.job_keys(queue, member.job.id), token)

    def claim_members(self, members: list[shared_pass.Member], queue: Queue) -> list[shared_pass.Member]:
        """Claim every member before the shared pass (core.claims), so none looks lost while it
        runs; a member another run owns, or that ended or was deleted, is dropped."""
        rt, kept = self.runtime, []
        for member in members:
            token = claims.new_token(self.name)
            verdict = rt.claims.claim(member.job.id, recovery.job_keys(queue, member.job.id), token)
            if verdict == "ok":
                rt.claim_tokens[member.job.id] = token
                kept.append(member)
            else:
                self.log.warning("Worker %s: job %s left out of the batch (%s)", self.name, member.job.id, verdict)
                self.drop_execution(member.job, queue, member.execution)
        return kept


def build_worker(
    settings: Settings,
    *,
    connection: Redis | None = None,
    registry: Registry | None = None,
    name: str | None = None,
    heartbeat: bool = True,
) -> ModelWorker:
    connection = connection if connection is not None else connect(settings)
    rt = runtime.start(settings, connection=connection, registry=registry, name=name, heartbeat=heartbeat)
    queue = Queue(settings.queue_name, connection=connection, serializer=JSONSerializer)
    return ModelWorker([queue], rt=rt, connection=connection)
