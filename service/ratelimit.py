"""Per-key limits kept in Redis, so every API process shares them: a request rate and a job count.

Both are one Lua script each: Redis runs a script atomically, so two API processes can never
both take the last token or the last job slot.

- `RateLimiter`: a token bucket per key (`rate` tokens/s refill, `burst` capacity), clocked by
  Redis' own TIME so API hosts with skewed clocks agree. Every `/v1` request takes a token.
- `JobSlots`: the ids of a key's unfinished jobs in a sorted set. A reservation first drops
  the ids whose RQ job has ended (or vanished), then adds the new id if fewer than the limit
  remain. Pruning by the job's real status means nothing has to remember to release a slot:
  a job whose worker was SIGKILLed frees its slot when RQ fails it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from redis import Redis

_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return {allowed, tostring(tokens)}
"""

# KEYS[1]: the owner's sorted set of job ids (score: reservation time)
# ARGV: limit, new job id, RQ job key prefix, grace seconds for ids not yet enqueued
_SLOTS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit = tonumber(ARGV[1])
local grace = tonumber(ARGV[4])
local live = 0
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #entries, 2 do
  local id = entries[i]
  local status = redis.call('HGET', ARGV[3] .. id, 'status')
  local active = status == 'queued' or status == 'started' or status == 'deferred'
    or status == 'scheduled' or status == 'created'
  if not status and now - tonumber(entries[i + 1]) < grace then
    active = true  -- reserved a moment ago; its RQ job is being written
  end
  if active then
    live = live + 1
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
if live >= limit then
  return {0, live}
end
redis.call('ZADD', KEYS[1], now, ARGV[2])
return {1, live + 1}
"""


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int  # the bucket size
    remaining: int  # whole tokens left
    retry_after: int  # seconds until one token is back (0 when allowed)
    reset: int  # seconds until the bucket is full again

    def headers(self) -> dict[str, str]:
        """RateLimit-* (draft-ietf-httpapi-ratelimit-headers) plus Retry-After when refused."""
        out = {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(self.remaining)}
        out["RateLimit-Reset"] = str(self.reset)
        if not self.allowed:
            out["Retry-After"] = str(self.retry_after)
        return out


class RateLimiter:
    def __init__(self, connection: Redis, prefix: str, rate: float, burst: int) -> None:
        self.connection, self.prefix, self.rate, self.burst = connection, prefix, rate, burst
        self._script = connection.register_script(_BUCKET)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def hit(self, principal: str) -> RateDecision:
        allowed, tokens_text = self._script(keys=[f"{self.prefix}:ratelimit:{principal}"], args=[self.rate, self.burst])
        tokens = float(tokens_text)
        retry_after = 0 if allowed else max(1, math.ceil((1 - tokens) / self.rate))
        reset = math.ceil((self.burst - tokens) / self.rate)
        return RateDecision(bool(allowed), self.burst, int(tokens), retry_after, reset)


class JobSlots:
    """At most `limit` unfinished jobs per owner."""

    GRACE_SECONDS = 10.0

    def __init__(self, connection: Redis, prefix: str, limit: int, job_key_prefix: str = "rq:job:") -> None:
        self.connection, self.prefix, self.limit, self.job_key_prefix = connection, prefix, limit, job_key_prefix
        self._script = connection.register_script(_SLOTS)

    def key(self, owner: str) -> str:
        return f"{self.prefix}:active:{owner}"

    def reserve(self, owner: str, job_id: str) -> tuple[bool, int]:
        """(True, jobs counting this one) if the owner had a free slot; (False, jobs) if not."""
        ok, count = self._script(
            keys=[self.key(owner)], args=[self.limit, job_id, self.job_key_prefix, self.GRACE_SECONDS]
        )
        return bool(ok), int(count)

    def release(self, owner: str, job_id: str) -> None:
        self.connection.zrem(self.key(owner), job_id)
