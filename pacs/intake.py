"""The series intake: received instances sealed in Redis, grouped by series, until it is complete.

A series is keyed by its owner (the API key, or the key a calling AE maps to) and its
SeriesInstanceUID (the StudyInstanceUID must agree). Each intake generation has its own 256-bit
data key (core.sealing) kept apart from the ciphertexts (LRPSEG_KEY_REDIS_URL, like a job's):
completion, failure and expiry (`series_ttl` after the last instance) destroy it, so no readable
patient data outlives the intake. A repeated SOPInstanceUID is taken as already stored.

Every change of state is one Lua script, so concurrent senders and sweepers agree:
  open -> (claim: quiet period passed, or an explicit commit) -> completing -> finished (a job) | failed
A claim carries a lease: a completer that dies is replaced once the lease ends, and the job it
may already have created is found again by its Idempotency-Key (the intake generation), so a
series never becomes two jobs.

Layout (prefix `lrpseg` by default):
  {p}:intake:{id}         hash  generation, state, owner, study, series, model, count, bytes, created, last,
                                [token, lease]
  {p}:intake-data:{id}    hash  SOPInstanceUID -> sealed Part 10 bytes
  {p}:intake-dek:{gen}    string  the generation's data key (on the key Redis)
  {p}:intakes-due         sorted set  intake id by when the sweeper should look at it
  {p}:intakes-open:{owner}  sorted set  the owner's open intakes by expiry (at most `series_max_open`)
  {p}:intake-result:{id}  hash  what the last completed generation became: job_id | detail (result_ttl)
"""

from __future__ import annotations

import hashlib
import io
import time
import uuid
import zipfile
from dataclasses import dataclass
from typing import Any

from redis import Redis

from core import sealing
from core.settings import Settings
from pacs.instances import OUT_OF_RESOURCES, PROCESSING_FAILURE, InstanceHeader, InstanceRefused

CLAIM_LEASE = 120.0  # s a completer holds a claimed series (reading, checking, queueing its job)

# KEYS: meta, the owner's open set   ARGV: new generation, owner, study, series, model, now, ttl, max open, id
_OPEN = """
local m = redis.call('hmget', KEYS[1], 'generation', 'state', 'study', 'model')
if not m[1] then
  redis.call('zremrangebyscore', KEYS[2], 0, ARGV[6])
  local open = redis.call('zcard', KEYS[2])
  if open >= tonumber(ARGV[8]) then return {'full', tostring(open)} end
  redis.call('hset', KEYS[1], 'generation', ARGV[1], 'state', 'open', 'owner', ARGV[2], 'study', ARGV[3],
    'series', ARGV[4], 'model', ARGV[5], 'created', ARGV[6], 'last', ARGV[6], 'count', 0, 'bytes', 0)
  redis.call('expire', KEYS[1], ARGV[7])
  redis.call('zadd', KEYS[2], tonumber(ARGV[6]) + tonumber(ARGV[7]), ARGV[9])
  redis.call('expire', KEYS[2], ARGV[7])
  return {'open', ARGV[1]}
end
if m[2] ~= 'open' then return {'busy', m[1]} end
if m[3] ~= ARGV[3] then return {'study', m[1]} end
if m[4] ~= ARGV[5] then return {'model', m[4]} end
return {'open', m[1]}
"""
# KEYS: meta, data, due, the owner's open set
# ARGV: generation, sop uid, sealed, size, now, quiet, ttl, max count, max bytes, id
_ADD = """
local m = redis.call('hmget', KEYS[1], 'generation', 'state', 'count', 'bytes')
if m[1] ~= ARGV[1] then return 'gone' end
if m[2] ~= 'open' then return 'busy' end
if redis.call('hexists', KEYS[2], ARGV[2]) == 1 then return 'duplicate' end
local refused = false
if tonumber(m[3]) + 1 > tonumber(ARGV[8]) then refused = 'too-many'
elseif tonumber(m[4]) + tonumber(ARGV[4]) > tonumber(ARGV[9]) then refused = 'too-large' end
if refused then
  if tonumber(m[3]) == 0 then redis.call('del', KEYS[1]) redis.call('zrem', KEYS[4], ARGV[10]) end
  return refused
end
redis.call('hset', KEYS[2], ARGV[2], ARGV[3])
redis.call('hincrby', KEYS[1], 'count', 1)
redis.call('hincrby', KEYS[1], 'bytes', ARGV[4])
redis.call('hset', KEYS[1], 'last', ARGV[5])
redis.call('zadd', KEYS[3], tonumber(ARGV[5]) + tonumber(ARGV[6]), ARGV[10])
redis.call('expire', KEYS[1], ARGV[7])
redis.call('expire', KEYS[2], ARGV[7])
redis.call('zadd', KEYS[4], tonumber(ARGV[5]) + tonumber(ARGV[7]), ARGV[10])
redis.call('expire', KEYS[4], ARGV[7])
return 'stored'
"""
# KEYS: meta, due   ARGV: id, now, lease, explicit (1|0), token, quiet
_CLAIM = """
local m = redis.call('hmget', KEYS[1], 'state', 'last', 'lease', 'count', 'generation')
if not m[1] then redis.call('zrem', KEYS[2], ARGV[1]) return {'gone'} end
if tonumber(m[4]) == 0 then return {'empty'} end
local now = tonumber(ARGV[2])
if m[1] == 'open' then
  local quiet_at = tonumber(m[2]) + tonumber(ARGV[6])
  if ARGV[4] ~= '1' and quiet_at > now then redis.call('zadd', KEYS[2], quiet_at, ARGV[1]) return {'wait'} end
elseif tonumber(m[3]) > now then
  return {'busy'}
end
redis.call('hset', KEYS[1], 'state', 'completing', 'token', ARGV[5], 'lease', now + tonumber(ARGV[3]))
redis.call('zadd', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
return {'claimed', m[5]}
"""
# KEYS: meta, data, due, result, the owner's open set   ARGV: token, id, job id, detail, result ttl, model, count,
# finished at
_FINISH = """
local m = redis.call('hmget', KEYS[1], 'token', 'study', 'series', 'generation')
if m[1] ~= ARGV[1] then return 0 end
redis.call('del', KEYS[1], KEYS[2], KEYS[4])
redis.call('zrem', KEYS[3], ARGV[2])
redis.call('zrem', KEYS[5], ARGV[2])
redis.call('hset', KEYS[4], 'job_id', ARGV[3], 'detail', ARGV[4], 'study', m[2], 'series', m[3],
  'generation', m[4], 'model', ARGV[6], 'count', ARGV[7], 'finished', ARGV[8])
redis.call('expire', KEYS[4], ARGV[5])
return 1
"""
# KEYS: meta, due, data   ARGV: token, id, retry at, ttl
_RELEASE = """
if redis.call('hget', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('hset', KEYS[1], 'state', 'open')
redis.call('hdel', KEYS[1], 'token', 'lease')
redis.call('zadd', KEYS[2], ARGV[3], ARGV[2])
redis.call('expire', KEYS[1], ARGV[4])
redis.call('expire', KEYS[3], ARGV[4])
return 1
"""


def intake_id(owner: str, series: str) -> str:
    return hashlib.sha256(f"{owner}\0{series}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Stored:
    duplicate: bool  # the SOPInstanceUID was already in the series (nothing changed)
    model: str


@dataclass(frozen=True)
class Claimed:
    """A series this completer now holds (until `finish`/`release`, or its lease ends)."""

    id: str
    token: str
    generation: str
    owner: str
    study: str
    series: str
    model: str
    instances: dict[str, bytes]  # SOPInstanceUID -> Part 10 bytes, unsealed


@dataclass(frozen=True)
class IntakeStatus:
    state: str  # receiving | completing | completed (its job was created) | failed
    study: str
    series: str
    model: str
    instances: int
    job_id: str | None = None
    detail: str | None = None
    quiet_at: float | None = None  # receiving: when it completes if nothing more arrives


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class SeriesIntake:
    def __init__(self, connection: Redis, settings: Settings, keys: Redis | None = None) -> None:
        self.connection = connection
        self.settings = settings
        self.prefix = settings.key_prefix
        self.keys = keys if keys is not None else connection  # where the data keys live (key_redis_url)

    def key(self, kind: str, name: str) -> str:
        return f"{self.prefix}:{kind}:{name}"

    @property
    def due_key(self) -> str:
        return f"{self.prefix}:intakes-due"

    # ---- receiving -----------------------------------------------------------------------

    def add(self, owner: str, header: InstanceHeader, data: bytes, model: str) -> Stored:
        """Store one instance in its series' intake (opened on the first); InstanceRefused says why not."""
        s = self.settings
        iid = intake_id(owner, header.series)
        for _ in range(3):  # an intake that ends between our two steps is opened again
            now = time.time()
            opened = self.connection.eval(
                _OPEN, 2, self.key("intake", iid), self.key("intakes-open", owner), uuid.uuid4().hex, owner,
                header.study, header.series, model, now, s.series_ttl, s.series_max_open, iid,
            )  # fmt: skip
            state, value = _text(opened[0]), _text(opened[1])
            if state == "busy":
                raise InstanceRefused(
                    OUT_OF_RESOURCES, "the series is being completed; send the instance again shortly"
                )
            if state == "full":
                raise InstanceRefused(
                    OUT_OF_RESOURCES,
                    f"{value} series are being received for this sender; the limit is {s.series_max_open}",
                )
            if state == "study":
                raise InstanceRefused(PROCESSING_FAILURE, "the series is open under another StudyInstanceUID")
            if state == "model":
                raise InstanceRefused(PROCESSING_FAILURE, f"the series is being received for model {value}")
            generation = value
            dek = self._data_key(generation)
            sealed = sealing.seal(dek, data, f"intake-{generation}", header.sop_instance)
            result = _text(
                self.connection.eval(
                    _ADD,
                    4,
                    self.key("intake", iid),
                    self.key("intake-data", iid),
                    self.due_key,
                    self.key("intakes-open", owner),
                    generation,
                    header.sop_instance,
                    sealed,
                    len(data),
                    now,
                    s.series_quiet_seconds,
                    s.series_ttl,
                    s.series_max_instances,
                    s.series_max_bytes,
                    iid,
                )  # fmt: skip
            )
            if result == "gone":
                continue
            if result == "busy":
                raise InstanceRefused(
                    OUT_OF_RESOURCES, "the series is being completed; send the instance again shortly"
                )
            if result == "too-many":
                raise InstanceRefused(
                    OUT_OF_RESOURCES, f"the series holds {s.series_max_instances} instances, the limit"
                )
            if result == "too-large":
                raise InstanceRefused(OUT_OF_RESOURCES, f"the series would exceed {s.series_max_bytes} bytes")
            self.keys.expire(self.key("intake-dek", generation), s.series_ttl)
            return Stored(result == "duplicate", model)
        raise InstanceRefused(OUT_OF_RESOURCES, "the series changed state while the instance was stored; send it again")

    def _data_key(self, generation: str) -> bytes:
        name = self.key("intake-dek", generation)
        key = sealing.new_data_key()
        if self.keys.set(name, key, nx=True, ex=self.settings.series_ttl):
            return key
        existing = self.keys.get(name)
        if existing is None:
            raise InstanceRefused(OUT_OF_RESOURCES, "the series' data key vanished; send the instance again")
        return _bytes(existing)

    # ---- completing ----------------------------------------------------------------------

    def due(self, now: float | None = None, limit: int = 20) -> list[str]:
        """Intakes whose quiet period (or a dead completer's lease) has passed."""
        raw = self.connection.zrangebyscore(self.due_key, 0, time.time() if now is None else now, start=0, num=limit)
        return [_text(r) for r in raw]

    def claim(self, iid: str, explicit: bool = False, now: float | None = None) -> Claimed | str:
        """Take the intake for completion; else why not: gone | empty | wait | busy."""
        token = uuid.uuid4().hex
        now = time.time() if now is None else now
        answer = self.connection.eval(
            _CLAIM, 2, self.key("intake", iid), self.due_key, iid, now, CLAIM_LEASE, int(explicit), token,
            self.settings.series_quiet_seconds,
        )  # fmt: skip
        if _text(answer[0]) != "claimed":
            return _text(answer[0])
        generation = _text(answer[1])
        meta = {_text(k): _text(v) for k, v in self.connection.hgetall(self.key("intake", iid)).items()}
        if "owner" not in meta:  # expired between the claim and this read
            return "gone"
        sealed = self.connection.hgetall(self.key("intake-data", iid))
        dek = self.keys.get(self.key("intake-dek", generation))
        instances: dict[str, bytes] = {}
        if dek is not None:
            try:
                instances = {
                    _text(sop): sealing.unseal(_bytes(dek), _bytes(blob), f"intake-{generation}", _text(sop))
                    for sop, blob in sealed.items()
                }
            except sealing.SealError:  # a key Redis that lost its keys made a new one: unreadable
                instances = {}
        return Claimed(iid, token, generation, meta["owner"], meta["study"], meta["series"], meta["model"], instances)

    def claim_series(self, owner: str, series: str) -> Claimed | str:
        """An explicit commit of the owner's series."""
        return self.claim(intake_id(owner, series), explicit=True)

    def finish(self, claimed: Claimed, job_id: str | None, detail: str | None = None) -> bool:
        """End the intake: its job (or why none), instances and data key destroyed. False when the
        lease was lost to another completer (which then finishes it)."""
        iid = claimed.id
        done = self.connection.eval(
            _FINISH, 5, self.key("intake", iid), self.key("intake-data", iid), self.due_key,
            self.key("intake-result", iid), self.key("intakes-open", claimed.owner), claimed.token, iid, job_id or "", detail or "", self.settings.result_ttl,
            claimed.model, len(claimed.instances), time.time(),
        )  # fmt: skip
        if done:
            self.keys.delete(self.key("intake-dek", claimed.generation))
        return bool(done)

    def release(self, claimed: Claimed, retry_in: float) -> None:
        """Give a claimed intake back (its job could not be queued yet); the sweeper retries later.
        Its expiry starts again: a series waiting for capacity must not expire unrecorded."""
        ttl = self.settings.series_ttl
        released = self.connection.eval(
            _RELEASE, 3, self.key("intake", claimed.id), self.due_key, self.key("intake-data", claimed.id),
            claimed.token, claimed.id, time.time() + retry_in, ttl,
        )  # fmt: skip
        if released:
            self.keys.expire(self.key("intake-dek", claimed.generation), ttl)

    # ---- reading ----------------------------------------------------------------------------

    def status(self, owner: str, series: str) -> IntakeStatus | None:
        """The owner's series: still receiving (or completing), else what its last generation became."""
        iid = intake_id(owner, series)
        meta = {_text(k): _text(v) for k, v in self.connection.hgetall(self.key("intake", iid)).items()}
        if meta and int(meta["count"]) > 0:
            receiving = meta["state"] == "open"
            return IntakeStatus(
                "receiving" if receiving else "completing",
                meta["study"],
                meta["series"],
                meta["model"],
                int(meta["count"]),
                quiet_at=float(meta["last"]) + self.settings.series_quiet_seconds if receiving else None,
            )
        done = {_text(k): _text(v) for k, v in self.connection.hgetall(self.key("intake-result", iid)).items()}
        if not done:
            return None
        return IntakeStatus(
            "completed" if done["job_id"] else "failed",
            done["study"],
            done["series"],
            done["model"],
            int(done["count"]),
            job_id=done["job_id"] or None,
            detail=done["detail"] or None,
        )


def series_zip(instances: dict[str, bytes]) -> bytes:
    """The instances as the zip a series job takes (lrpseg.io.zipped), byte-identical for the same
    instances (sorted, fixed timestamps): a re-claimed series replays the same Idempotency-Key."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for n, sop in enumerate(sorted(instances)):
            archive.writestr(zipfile.ZipInfo(f"{n:05d}.dcm", date_time=(1980, 1, 1, 0, 0, 0)), instances[sop])
    return buffer.getvalue()
