"""Deliveries: callbacks (how bodies are signed) and DICOM results sent to a PACS (STOW-RS or
C-STORE, core.pacs), one kind of record for both (who may be called: core.security, core.pacs).

A job or batch that ends gets one delivery record in Redis; deliverers (a thread in every
worker process, `workers.deliverer`) claim due records with a lease, POST them and
reschedule failures with exponential backoff. Nothing here sends HTTP; the API checks URLs
(service.callback_urls) and reads delivery status, the job-end hook (core.job_end) creates records.

Layout (prefix `lrpseg` by default):
  {p}:callback:{delivery id}  hash  kind (callback|dicomweb|dimse), url (a DICOMweb root or an
                                    AET@host:port for PACS kinds), body, subject, status
                                    (pending|delivered|failed), attempts, last_status, last_error,
                                    next_at, delivered_at, lease
  {p}:callbacks:due           zset  delivery id -> when its next attempt is due (unix s)
  {p}:callbacks:leased        zset  delivery id -> when its current claim runs out
  {p}:callbacks:wake          list  at most one id: wakes a sleeping deliverer (BRPOP) at once

Delivery is at least once: a deliverer that dies mid-send loses its lease, and the record
goes out again after `callback_lease` s with the same delivery id (receivers dedupe on
`X-Lrpseg-Delivery`); a PACS gets the same SOP instances again, which it stores once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis import Redis

from schemas.callbacks import CallbackState, CallbackStatus

SIGNATURE_HEADER = "X-Lrpseg-Signature"
TIMESTAMP_HEADER = "X-Lrpseg-Timestamp"
DELIVERY_HEADER = "X-Lrpseg-Delivery"
EVENT_HEADER = "X-Lrpseg-Event"
CALLBACK = "callback"  # the kind of a callback record (PACS kinds: core.pacs.DICOMWEB, DIMSE)


# ---- signatures -----------------------------------------------------------------------------


def signed_content(timestamp: str, body: bytes) -> bytes:
    """What the signature covers: the timestamp header's value, a dot, then the raw body."""
    return timestamp.encode() + b"." + body


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), signed_content(timestamp, body), hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, tolerance: float = 300.0) -> bool:
    """What a receiver does: constant-time compare, and refuse timestamps outside +-tolerance s."""
    try:
        sent = float(timestamp)
    except ValueError:
        return False
    if abs(time.time() - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


# ---- delivery records -------------------------------------------------------------------------

# KEYS: due, leased; ARGV: now, lease_until, limit, prefix, max_attempts.
# Expired leases first: their send may have died with its deliverer. The attempt was
# counted when it was claimed; with attempts left the record is due again at once.
_CLAIM = """
local now, lease_until, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], id)
  local key = ARGV[4] .. ':callback:' .. id
  local attempts = tonumber(redis.call('HGET', key, 'attempts') or '0')
  if redis.call('EXISTS', key) == 0 then
  elseif attempts >= tonumber(ARGV[5]) then
    redis.call('HSET', key, 'status', 'failed', 'last_error', 'the deliverer stopped during the last attempt',
               'next_at', '', 'lease', '')
  else
    redis.call('HSET', key, 'last_error', 'the deliverer stopped during an attempt', 'lease', '')
    redis.call('ZADD', KEYS[1], now, id)
  end
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
local claimed = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[4] .. ':callback:' .. id
  if redis.call('EXISTS', key) == 1 then
    local token = id .. ':' .. now .. ':' .. redis.call('HINCRBY', key, 'attempts', 1)
    redis.call('HSET', key, 'lease', token)
    redis.call('ZADD', KEYS[2], lease_until, id)
    table.insert(claimed, id)
    table.insert(claimed, token)
  end
end
return claimed
"""

# KEYS: record, due, leased; ARGV: id, token, outcome (delivered|retry|failed|postpone), fields
# (json), next_at. Only the holder of the current lease may settle it: a late answer after
# the lease ran out (the record went to someone else) is dropped. `postpone` hands the claim
# back uncounted (the job has not been marked ended yet).
_SETTLE = """
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[3], ARGV[1])
if ARGV[3] == 'postpone' then
  redis.call('HINCRBY', KEYS[1], 'attempts', -1)
  redis.call('HSET', KEYS[1], 'lease', '', 'next_at', ARGV[5])
  redis.call('ZADD', KEYS[2], tonumber(ARGV[5]), ARGV[1])
  return 1
end
local fields = cjson.decode(ARGV[4])
for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
redis.call('HSET', KEYS[1], 'lease', '')
if ARGV[3] == 'retry' then
  redis.call('HSET', KEYS[1], 'status', 'pending', 'next_at', ARGV[5])
  redis.call('ZADD', KEYS[2], tonumber(ARGV[5]), ARGV[1])
else
  redis.call('HSET', KEYS[1], 'status', ARGV[3], 'next_at', '')
end
return 1
"""


@dataclass(frozen=True)
class Delivery:
    """A claimed delivery: what to send, and the lease token that settles it."""

    id: str
    token: str
    url: str
    body: bytes
    subject: str
    event: str
    attempts: int
    created: float
    wait_for: str | None = None  # a job whose end RQ must have stored before the send
    kind: str = CALLBACK


def new_delivery_id() -> str:
    return uuid.uuid4().hex


class Deliveries:
    """The delivery records of one key prefix."""

    def __init__(self, connection: Redis, prefix: str = "lrpseg") -> None:
        self.connection = connection
        self.prefix = prefix
        self.due_key = f"{prefix}:callbacks:due"
        self.leased_key = f"{prefix}:callbacks:leased"
        self.wake_key = f"{prefix}:callbacks:wake"  # a list of at most one token: "something is due now"
        self._claim = connection.register_script(_CLAIM)
        self._settle = connection.register_script(_SETTLE)

    def key(self, delivery_id: str) -> str:
        return f"{self.prefix}:callback:{delivery_id}"

    def schedule(
        self,
        delivery_id: str,
        url: str,
        body: dict[str, Any],
        *,
        subject: str,
        event: str,
        ttl: int,
        wait_for: str | None = None,
        kind: str = CALLBACK,
    ) -> bool:
        """Create the record, due now; False (and nothing changes) if it exists: one end, one delivery."""
        key = self.key(delivery_id)
        now = time.time()
        fields = {
            "url": url,
            "body": json.dumps(body, separators=(",", ":"), sort_keys=True),
            "subject": subject,
            "event": event,
            "status": CallbackState.pending.value,
            "attempts": 0,
            "created": repr(now),
            "next_at": repr(now),
            "wait_for": wait_for or "",
            "kind": kind,
        }
        if not self.connection.hsetnx(key, "url", url):
            return False
        with self.connection.pipeline() as pipe:
            pipe.hset(key, mapping=fields)
            pipe.expire(key, ttl)
            pipe.zadd(self.due_key, {delivery_id: now})
            pipe.lpush(self.wake_key, delivery_id)
            pipe.ltrim(self.wake_key, 0, 0)
            pipe.execute()
        return True

    def wait(self, seconds: float) -> None:
        """Sleep up to `seconds`, or until a new delivery is scheduled (a deliverer wakes at once)."""
        if seconds >= 0.01:  # BRPOP's 0 would mean forever
            self.connection.brpop([self.wake_key], timeout=seconds)

    def claim(self, limit: int, lease: float, max_attempts: int, now: float | None = None) -> list[Delivery]:
        now = time.time() if now is None else now
        flat = self._claim(
            keys=[self.due_key, self.leased_key], args=[repr(now), repr(now + lease), limit, self.prefix, max_attempts]
        )
        out = []
        for raw_id, raw_token in zip(flat[::2], flat[1::2], strict=True):
            delivery_id, token = raw_id.decode(), raw_token.decode()
            raw = self.connection.hgetall(self.key(delivery_id))
            if not raw:
                continue
            out.append(
                Delivery(
                    delivery_id,
                    token,
                    raw[b"url"].decode(),
                    raw[b"body"],
                    raw.get(b"subject", b"").decode(),
                    raw.get(b"event", b"").decode(),
                    int(raw.get(b"attempts", b"0")),
                    float(raw.get(b"created", b"0")),
                    raw.get(b"wait_for", b"").decode() or None,
                    raw.get(b"kind", CALLBACK.encode()).decode(),
                )
            )
        return out

    def settle(
        self,
        delivery: Delivery,
        outcome: str,
        *,
        status_code: int | None,
        error: str | None,
        next_at: float | None = None,
    ) -> bool:
        fields: dict[str, str] = {"last_status": "" if status_code is None else str(status_code)}
        fields["last_error"] = error or ""
        fields["last_attempt_at"] = repr(time.time())
        if outcome == "delivered":
            fields["delivered_at"] = repr(time.time())
        done = self._settle(
            keys=[self.key(delivery.id), self.due_key, self.leased_key],
            args=[delivery.id, delivery.token, outcome, json.dumps(fields), repr(next_at or 0.0)],
        )
        return bool(done)

    def postpone(self, delivery: Delivery, until: float) -> bool:
        """Give a claim back without counting it as an attempt (the subject has not ended yet)."""
        done = self._settle(
            keys=[self.key(delivery.id), self.due_key, self.leased_key],
            args=[delivery.id, delivery.token, "postpone", "{}", repr(until)],
        )
        return bool(done)

    def next_due(self) -> float | None:
        first = self.connection.zrange(self.due_key, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    def status(self, delivery_id: str, url: str, max_attempts: int | None = None) -> CallbackStatus:
        """What the job / batch view shows; a record not made yet = pending, 0 attempts."""
        raw = {k.decode(): v.decode() for k, v in self.connection.hgetall(self.key(delivery_id)).items()}
        if not raw:
            return CallbackStatus(delivery_id=delivery_id, url=url, status=CallbackState.pending, attempts=0)

        def when(name: str) -> datetime | None:
            return datetime.fromtimestamp(float(raw[name]), tz=UTC) if raw.get(name) else None

        last_status = raw.get("last_status")
        return CallbackStatus(
            delivery_id=delivery_id,
            url=raw.get("url", url),
            status=CallbackState(raw.get("status", "pending")),
            attempts=int(raw.get("attempts", "0")),
            max_attempts=max_attempts,
            last_status_code=int(last_status) if last_status else None,
            last_error=raw.get("last_error") or None,
            next_attempt_at=when("next_at") if raw.get("status") == "pending" else None,
            last_attempt_at=when("last_attempt_at"),
            delivered_at=when("delivered_at"),
        )

    def delete(self, delivery_id: str) -> None:
        with self.connection.pipeline() as pipe:
            pipe.delete(self.key(delivery_id))
            pipe.zrem(self.due_key, delivery_id)
            pipe.zrem(self.leased_key, delivery_id)
            pipe.execute()
