from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lrpseg.client.backoff import Backoff, retry_after_seconds


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Fri, 02 Jan 2026 03:04:15 GMT", now) == 10.0
    assert retry_after_seconds("Fri, 02 Jan 2026 03:04:00 GMT", now) == 0.0  # in the past: now
    for garbled in (None, "", "soon", "-3"):
        assert retry_after_seconds(garbled) is None


def test_refusals_wait_retry_after_or_grow_exponentially() -> None:
    policy = Backoff(base=0.5, factor=2.0, cap=3.0)
    assert 4.0 <= policy.refusal_delay(0, 4.0) <= 4.4  # the server's word, plus <= 10 % jitter
    bare = [policy.refusal_delay(n, None) for n in range(5)]
    for got, want in zip(bare, [0.5, 1.0, 2.0, 3.0, 3.0]):
        assert want <= got <= want * 1.1


def test_polling_backs_off_and_never_sleeps_past_retry_after() -> None:
    policy = Backoff(poll_first=0.2, factor=2.0, poll_cap=2.0)
    assert [policy.poll_delay(n, None) for n in range(6)] == pytest.approx([0.2, 0.4, 0.8, 1.6, 2.0, 2.0])
    assert policy.poll_delay(5, 1.0) == 1.0 and policy.poll_delay(0, 1.0) == pytest.approx(0.2)
    polls_in_10s, waited = 0, 0.0
    while waited < 10:
        waited += policy.poll_delay(polls_in_10s, None)
        polls_in_10s += 1
    assert polls_in_10s <= 10  # not 10 a second (the old CLI: 100 in 10 s)
