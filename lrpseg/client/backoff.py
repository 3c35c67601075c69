"""When to try again: Retry-After first, else exponential backoff with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

RETRY_STATUSES = frozenset({429, 503})


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3); None if absent/garbled."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class Backoff:
    """Retries of refused submissions (429/503) and the pace of polling a running job.

    `retries`: how often a 429/503 is retried; each wait is the server's Retry-After (or
    `base · factor^n`, capped at `cap`) plus up to 10 % jitter, so many clients spread out.
    Polling starts at `poll_first` seconds and grows by `factor` to `poll_cap`, never faster
    than that, and never slower than the Retry-After the job's own status sends.
    """

    retries: int = 8
    base: float = 0.5
    factor: float = 1.6
    cap: float = 30.0
    poll_first: float = 0.2
    poll_cap: float = 2.0

    def refusal_delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number `attempt` (0-based) of a refused request."""
        delay = retry_after if retry_after is not None else min(self.cap, self.base * self.factor**attempt)
        return delay * (1.0 + 0.1 * random.random())

    def poll_delay(self, poll: int, retry_after: float | None) -> float:
        """Seconds before status poll number `poll` (0-based) of a running job."""
        delay = min(self.poll_cap, self.poll_first * self.factor**poll)
        return min(delay, retry_after) if retry_after is not None else delay
