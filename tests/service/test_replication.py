"""Replication settings without a cluster: Sentinel settings are checked at start, and with
LRPSEG_REDIS_WAIT_REPLICAS a 202 needs replicas to confirm (the test Redis has none)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from tests.service import factories
from tests.service.test_jobs import submit


def test_sentinel_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="LRPSEG_REDIS_MASTER"):
        Settings(redis_sentinels="127.0.0.1:26379")
    with pytest.raises(ValueError, match="host:port"):
        Settings(redis_sentinels="127.0.0.1", redis_master="m")
    settings = Settings(redis_sentinels=" a:1, b:2 ", redis_master="m")
    assert settings.sentinel_addresses() == [("a", 1), ("b", 2)] and settings.redis_configured


@pytest.mark.usefixtures("redis_conn")
def test_a_job_no_replica_confirmed_gets_503_and_its_key_finds_it(
    make_client: Callable[[Settings], TestClient], settings: Settings
) -> None:
    """The test Redis has no replica: WAIT 1 times out, the API says 503 (not a 202 it cannot
    stand behind), and a retry with the same Idempotency-Key gets the job that was queued."""
    client = make_client(settings.model_copy(update={"redis_wait_replicas": 1, "redis_wait_timeout": 0.2}))
    image = factories.png_bytes(factories.defect_image(64)[0])
    key = {"Idempotency-Key": "scan-1"}
    first = submit(client, image, {}, headers=key)
    assert first.status_code == 503 and first.json()["type"].endswith("/not-replicated")
    assert int(first.headers["retry-after"]) >= 1
    again = submit(client, image, {}, headers=key)
    assert again.status_code == 503  # still no replica; the same job, not a second one
    assert client.app.state.queue.count == 1
    plain = make_client(settings)  # without the requirement the replay answers at once
    replay = submit(plain, image, {}, headers=key)
    assert replay.status_code == 202 and client.app.state.queue.job_ids == [replay.json()["job_id"]]
