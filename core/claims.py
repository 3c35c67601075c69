"""The job state machine: who may run a job, and who may end it, decided atomically in Redis.

RQ moves a job queue -> intermediate list -> started -> finished/failed in separate writes, and
its clean-ups (started registry, intermediate list) act on a snapshot. A worker paused at the
wrong moment could therefore resume after its job was re-queued or ended, and (issue 15):
- mark a failed or re-queued job "started" with no claim anywhere (stuck for good), or
- record `failed: inputs_missing` over the result another worker had finished.

Here every transition that matters is one Lua script or a WATCHed transaction on a claim key:

  {p}:claim:{id}  string  the token of the one execution allowed to run and end the job (PX ttl)
  {p}:open        zset    jobs not ended -> when last known alive (enqueued, claimed, renewed)

- `claim`: a worker may run a job only if it is not ended and nobody else holds the claim; taking
  it removes any queue copy, so a job is never both queued and claimed.
- `renew`: the running execution extends its claim (only while the token is still its own).
- `Fence`: the end writes (RQ's success/failure pipelines, the artifacts, dropping the inputs) run
  in a transaction that WATCHes the claim and checks the token: a run whose claim lapsed and was
  taken over writes nothing (`ClaimLost`), so a finished job is never overwritten by a late worker.
- `reap`: for a job that is not ended, has no claim, is not queued and has not been seen alive for
  `job_lost_after` s, the reaper takes the claim itself; it then re-queues the job (retries left,
  or it never started) or fails it as `worker_lost` (core.recovery). So every job that is not
  ended holds a live claim or a queue entry, whatever its RQ status says.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import WatchError

ENDED = ("finished", "failed", "canceled", "stopped")


class ClaimLost(Exception):
    """This execution no longer holds the job's claim: another run (or the reaper) owns the job."""


_ENDED_LUA = (
    "local function ended(s) return s == 'finished' or s == 'failed' or s == 'canceled' or s == 'stopped' end\n"
)

# KEYS: job, claim, queue, open, intermediate   ARGV: token, ttl_ms, job_id, now
_CLAIM = (
    _ENDED_LUA
    + """
local st = redis.call('hget', KEYS[1], 'status')
if not st then redis.call('zrem', KEYS[4], ARGV[3]) return 'gone' end
if ended(st) then redis.call('zrem', KEYS[4], ARGV[3]) return 'ended' end
local cur = redis.call('get', KEYS[2])
if cur and cur ~= ARGV[1] then return 'taken' end
redis.call('set', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('lrem', KEYS[3], 0, ARGV[3])
redis.call('lrem', KEYS[5], 0, ARGV[3])
redis.call('zadd', KEYS[4], ARGV[4], ARGV[3])
return 'ok'
"""
)

# KEYS: claim, open   ARGV: token, ttl_ms, job_id, now
_RENEW = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('pexpire', KEYS[1], ARGV[2])
redis.call('zadd', KEYS[2], 'XX', ARGV[4], ARGV[3])
return 1
"""

# KEYS: claim, job, open   ARGV: token, job_id
_RELEASE = (
    _ENDED_LUA
    + """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('del', KEYS[1])
local st = redis.call('hget', KEYS[2], 'status')
if not st or ended(st) then redis.call('zrem', KEYS[3], ARGV[2]) end
return 1
"""
)

# KEYS: job, claim, queue, open   ARGV: job_id, token, ttl_ms, stale_before
_REAP = (
    _ENDED_LUA
    + """
local st = redis.call('hget', KEYS[1], 'status')
if not st then redis.call('zrem', KEYS[4], ARGV[1]) return 'gone' end
if ended(st) then redis.call('zrem', KEYS[4], ARGV[1]) return 'ended' end
if redis.call('exists', KEYS[2]) == 1 then return 'claimed' end
if redis.call('lpos', KEYS[3], ARGV[1]) then return 'queued' end
local seen = redis.call('zscore', KEYS[4], ARGV[1])
if seen and tonumber(seen) > tonumber(ARGV[4]) then return 'young' end
redis.call('set', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 'lost:' .. st
"""
)

# KEYS: job, claim, queue, open, intermediate, started   ARGV: job_id, token, now, use_retry
_REQUEUE = """
if redis.call('get', KEYS[2]) ~= ARGV[2] then return 0 end
if ARGV[4] == '1' then redis.call('hincrby', KEYS[1], 'retries_left', -1) end
redis.call('hset', KEYS[1], 'status', 'queued')
redis.call('persist', KEYS[1])
redis.call('lrem', KEYS[5], 0, ARGV[1])
redis.call('lrem', KEYS[3], 0, ARGV[1])
redis.call('rpush', KEYS[3], ARGV[1])
for _, member in ipairs(redis.call('zrange', KEYS[6], 0, -1)) do
  if string.sub(member, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. ':' then redis.call('zrem', KEYS[6], member) end
end
redis.call('del', KEYS[2])
redis.call('zadd', KEYS[4], ARGV[3], ARGV[1])
return 1
"""


@dataclass(frozen=True)
class JobKeys:
    """The RQ keys of one job in one queue (names from rq.Job / rq.Queue, passed to the scripts)."""

    job: str
    queue: str
    intermediate: str
    started: str


class Claims:
    """The claim scripts for one key prefix; `ttl` (s) is how long a claim lives unrenewed."""

    def __init__(self, connection: Redis, prefix: str, ttl: float) -> None:
        self.connection, self.prefix, self.ttl_ms = connection, prefix, int(ttl * 1000)
        self._claim = connection.register_script(_CLAIM)
        self._renew = connection.register_script(_RENEW)
        self._release = connection.register_script(_RELEASE)
        self._reap = connection.register_script(_REAP)
        self._requeue = connection.register_script(_REQUEUE)

    @property
    def open_key(self) -> str:
        return f"{self.prefix}:open"

    def claim_key(self, job_id: str) -> str:
        return f"{self.prefix}:claim:{job_id}"

    def opened(self, job_id: str, pipeline: Pipeline | Redis | None = None) -> None:
        """A job was (or is about to be) enqueued: from now on it is watched until it ends."""
        (pipeline if pipeline is not None else self.connection).zadd(self.open_key, {job_id: time.time()})

    def open_jobs(self) -> list[str]:
        return [_text(member) for member in self.connection.zrange(self.open_key, 0, -1)]

    def claim(self, job_id: str, keys: JobKeys, token: str) -> str:
        """'ok' (this token runs the job), or why not: 'ended', 'gone' (deleted), 'taken'."""
        args: list[str | int | float] = [token, self.ttl_ms, job_id, time.time()]
        return _text(
            self._claim(
                keys=[keys.job, self.claim_key(job_id), keys.queue, self.open_key, keys.intermediate], args=args
            )
        )

    def renew(self, job_id: str, token: str) -> bool:
        return bool(
            self._renew(keys=[self.claim_key(job_id), self.open_key], args=[token, self.ttl_ms, job_id, time.time()])
        )

    def holds(self, job_id: str, token: str) -> bool:
        return _text(self.connection.get(self.claim_key(job_id)) or b"") == token

    def release(self, job_id: str, keys: JobKeys, token: str) -> bool:
        """Drop our claim; the job leaves the open set if it has ended (or is gone)."""
        return bool(self._release(keys=[self.claim_key(job_id), keys.job, self.open_key], args=[token, job_id]))

    def reap(self, job_id: str, keys: JobKeys, token: str, stale_after: float) -> str:
        """Take the claim of a lost job ('lost:<rq status>'), or say why it is not lost."""
        args: list[str | int | float] = [job_id, token, self.ttl_ms, time.time() - stale_after]
        return _text(self._reap(keys=[keys.job, self.claim_key(job_id), keys.queue, self.open_key], args=args))

    def requeue(self, job_id: str, keys: JobKeys, token: str, *, use_retry: bool) -> bool:
        """Put a reaped job back on its queue (and drop the reaper's claim) in one step."""
        ks = [keys.job, self.claim_key(job_id), keys.queue, self.open_key, keys.intermediate, keys.started]
        return bool(self._requeue(keys=ks, args=[job_id, token, time.time(), "1" if use_retry else "0"]))

    def fenced(self, job_id: str, token: str, write: Callable[[Pipeline], Any]) -> None:
        """Run `write(pipeline)` as one transaction that happens only while `token` holds the claim."""
        key = self.claim_key(job_id)
        with self.connection.pipeline() as pipe:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]
                if _text(pipe.get(key) or b"") != token:
                    raise ClaimLost(job_id)
                pipe.multi()
                write(pipe)
                pipe.execute()
            except WatchError:
                raise ClaimLost(job_id) from None


def new_token(owner: str) -> str:
    return f"{owner}:{uuid.uuid4().hex}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# ---- fencing RQ's own end writes ------------------------------------------------------------

_fence = threading.local()


@dataclass(frozen=True)
class Fence:
    key: str
    token: str


@contextmanager
def fence(claims: Claims, job_id: str, token: str) -> Iterator[None]:
    """While active in this thread, every transaction of a `FencedRedis` connection commits only
    if `token` still holds the job's claim (else `ClaimLost`)."""
    previous = getattr(_fence, "value", None)
    _fence.value = Fence(claims.claim_key(job_id), token)
    try:
        yield
    finally:
        _fence.value = previous


class FencedPipeline(Pipeline):
    """A pipeline that, under an active `fence`, WATCHes the claim key and checks the token."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        in_transaction = bool(getattr(self, "transaction", False))
        self._lrpseg_fence: Fence | None = getattr(_fence, "value", None) if in_transaction else None

    def _check_fence(self) -> None:
        fence_ = self._lrpseg_fence
        if fence_ is None:
            return
        holder = self.immediate_execute_command("GET", fence_.key)  # type: ignore[no-untyped-call]
        if _text(holder or b"") != fence_.token:
            self.reset()
            raise ClaimLost(fence_.key)

    def watch(self, *names: Any) -> Any:
        fence_ = self._lrpseg_fence
        result = super().watch(*names, *((fence_.key,) if fence_ is not None else ()))  # type: ignore[no-untyped-call]
        self._check_fence()
        return result

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        fence_ = self._lrpseg_fence
        if fence_ is not None and self.command_stack and not self.watching and not self.explicit_transaction:
            # buffered commands stay queued for MULTI/EXEC
            Pipeline.watch(self, fence_.key)  # type: ignore[no-untyped-call]
            self._check_fence()
        return super().execute(raise_on_error)  # WatchError if the claim changed meanwhile


class FencedRedis(Redis):
    """A Redis client whose transactions honour the thread's `fence` (the worker's connection)."""

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        return FencedPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


def fenced_connection(connection: Redis) -> FencedRedis:
    """The same server and pool as `connection`, with fenced transactions."""
    return FencedRedis(connection_pool=connection.connection_pool)
