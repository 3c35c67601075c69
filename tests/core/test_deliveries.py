"""Callback signatures (core.deliveries): what a receiver checks."""

from __future__ import annotations

import time

from core import deliveries

SECRET = "s3cret-for-tests"


def test_signature_verification_rejects_tampering_and_replays() -> None:
    body = b'{"job_id":"x"}'
    now = str(int(time.time()))
    signature = deliveries.sign(SECRET, now, body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert deliveries.verify(SECRET, now, body, signature)
    assert not deliveries.verify(SECRET, now, body + b" ", signature)
    assert not deliveries.verify("other", now, body, signature)
    assert not deliveries.verify(SECRET, str(int(now) + 1), body, signature)  # the timestamp is signed
    old = str(int(time.time()) - 3600)
    assert not deliveries.verify(SECRET, old, body, deliveries.sign(SECRET, old, body))  # a replay an hour later
