"""The series intake on a real Redis: idempotent instances, one claim per series, a dead completer
replaced without a second job, sealed data destroyed with the intake."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from core.settings import Settings
from core.store import Inputs, Upload
from pacs.instances import InstanceRefused, read_header
from pacs.intake import CLAIM_LEASE, Claimed, SeriesIntake, intake_id, series_zip
from service.errors import ApiError
from service.series_jobs import SeriesJobs
from service.submission import Intake, fingerprint
from tests.pacs.factories import ct_series, instance_bytes
from tests.service import factories

OWNER = "anonymous"


def fill(intake: SeriesIntake, files: list[bytes]) -> str:
    for data in files:
        intake.add(OWNER, read_header(data), data, factories.VOLUME)
    return read_header(files[0]).series


def test_duplicates_are_idempotent_and_data_is_sealed(redis_conn: redis.Redis, settings: Settings) -> None:
    intake = SeriesIntake(redis_conn, settings)
    files = instance_bytes(ct_series(3))
    series = fill(intake, files)
    again = intake.add(OWNER, read_header(files[1]), files[1], factories.VOLUME)
    assert again.duplicate
    status = intake.status(OWNER, series)
    assert status is not None and (status.state, status.instances) == ("receiving", 3)
    claimed = intake.claim(intake_id(OWNER, series), explicit=True)
    assert isinstance(claimed, Claimed)
    assert sorted(claimed.instances.values()) == sorted(files)  # unsealed bytes are the sent ones
    # not yet quiet: the sweeper's (non-explicit) claim waits; once claimed, a second claim is refused
    assert intake.claim(intake_id(OWNER, series)) == "busy"
    assert intake.finish(claimed, "job-1")
    assert redis_conn.keys(f"{settings.key_prefix}:intake-dek:*") == []
    assert redis_conn.keys(f"{settings.key_prefix}:intake-data:*") == []


def test_quiet_period_and_one_claim_among_racers(redis_conn: redis.Redis, settings: Settings) -> None:
    intake = SeriesIntake(redis_conn, settings)
    series = fill(intake, instance_bytes(ct_series(2, seed=1)))
    iid = intake_id(OWNER, series)
    assert intake.claim(iid) == "wait"  # just received: not quiet yet
    later = intake.due(now=1e12)
    assert later == [iid]
    results: list[object] = []
    barrier = threading.Barrier(8)

    def racer() -> None:
        barrier.wait()
        results.append(intake.claim(iid, now=1e12))

    threads = [threading.Thread(target=racer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(r, Claimed) for r in results) == 1
    assert sorted(r for r in results if isinstance(r, str)) == ["busy"] * 7


def test_a_dead_completer_is_replaced_without_a_second_job(
    redis_conn: redis.Redis,
    settings: Settings,
    client: TestClient,
    work: Callable[[], bool],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jobs: SeriesJobs = client.app.state.series_jobs  # type: ignore[attr-defined]
    series = fill(jobs.intake, instance_bytes(ct_series(4, seed=2)))
    iid = intake_id(OWNER, series)
    first = jobs.intake.claim(iid, explicit=True)
    assert isinstance(first, Claimed)

    def crash(*args: object, **kwargs: object) -> bool:
        raise ConnectionError("the completer died after queueing the job")

    with monkeypatch.context() as patch:
        patch.setattr(SeriesIntake, "finish", crash)
        with pytest.raises(ConnectionError):
            jobs.complete(first)
    assert jobs.intake.claim(iid, explicit=True) == "busy"  # its lease still holds
    second = jobs.intake.claim(iid, now=time.time() + CLAIM_LEASE + 1)  # the lease ran out: taken over
    assert isinstance(second, Claimed) and second.token != first.token
    job_id = jobs.complete(second)
    assert not jobs.intake.finish(first, "stale")  # the dead one's token no longer counts
    assert len(redis_conn.keys(f"{settings.key_prefix}:record:*")) == 1  # the Idempotency-Key found its job
    status = jobs.intake.status(OWNER, series)
    assert status is not None and (status.state, status.job_id) == ("completed", job_id)
    assert work()
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "finished"


def test_one_odd_failure_does_not_stall_the_sweep(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    jobs: SeriesJobs = client.app.state.series_jobs  # type: ignore[attr-defined]
    first = fill(jobs.intake, instance_bytes(ct_series(2, seed=12)))
    second = fill(jobs.intake, instance_bytes(ct_series(2, seed=13)))
    submit = Intake.submit
    calls: list[int] = []

    def odd_once(self: Intake, *args: Any, **kwargs: Any) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("an odd failure")
        return submit(self, *args, **kwargs)

    monkeypatch.setattr(Intake, "submit", odd_once)
    monkeypatch.setattr(time, "time", lambda: 2e9)  # both quiet
    assert jobs.sweep() == 1 and "could not be completed" in caplog.text
    states = sorted(s.state for s in (jobs.intake.status(OWNER, first), jobs.intake.status(OWNER, second)) if s)
    assert states == ["completed", "receiving"]  # the odd one was given back for a later round


def test_expiry_destroys_the_key_and_a_bad_series_fails(
    redis_conn: redis.Redis, settings: Settings, client: TestClient
) -> None:
    jobs: SeriesJobs = client.app.state.series_jobs  # type: ignore[attr-defined]
    datasets = ct_series(2, seed=3)
    datasets[1].Rows, datasets[1].Columns = 64, 64  # the series decoder refuses mixed sizes
    datasets[1].PixelData = datasets[1].PixelData[: 64 * 64 * 2]
    series = fill(jobs.intake, instance_bytes(datasets))
    claimed = jobs.intake.claim(intake_id(OWNER, series), explicit=True)
    assert isinstance(claimed, Claimed)
    with pytest.raises(Exception) as caught:
        jobs.complete(claimed)
    assert getattr(caught.value, "status", None) == 422
    status = jobs.intake.status(OWNER, series)
    assert status is not None and status.state == "failed" and "differ in size" in (status.detail or "")
    assert redis_conn.keys(f"{settings.key_prefix}:intake-dek:*") == []
    # an intake whose TTL passed: its key is gone, so nothing readable remains
    short = SeriesIntake(redis_conn, settings.model_copy(update={"series_ttl": 1}))
    abandoned = fill(short, instance_bytes(ct_series(1, seed=4)))
    assert len(redis_conn.keys(f"{settings.key_prefix}:intake-dek:*")) == 1
    time.sleep(1.1)
    assert redis_conn.keys(f"{settings.key_prefix}:intake-dek:*") == []
    assert redis_conn.keys(f"{settings.key_prefix}:intake-data:*") == []
    assert short.status(OWNER, abandoned) is None


def test_limits_refuse_with_out_of_resources(redis_conn: redis.Redis, settings: Settings) -> None:
    intake = SeriesIntake(redis_conn, settings.model_copy(update={"series_max_instances": 1}))
    files = instance_bytes(ct_series(2, seed=5))
    fill(intake, files[:1])
    with pytest.raises(InstanceRefused) as caught:
        fill(intake, files[1:])
    assert caught.value.reason == 0xA700


def test_open_series_per_sender_are_bounded(redis_conn: redis.Redis, settings: Settings) -> None:
    intake = SeriesIntake(redis_conn, settings.model_copy(update={"series_max_open": 2}))
    first, second, third = (instance_bytes(ct_series(1, seed=s)) for s in (6, 7, 8))
    fill(intake, first)
    series = fill(intake, second)
    with pytest.raises(InstanceRefused) as caught:
        fill(intake, third)
    assert caught.value.reason == 0xA700 and "the limit is 2" in caught.value.detail
    fill(intake, first)  # an open series still takes instances (here: a repeat)
    assert SeriesIntake(redis_conn, settings).add("someone-else", read_header(third[0]), third[0], "m@1")
    claimed = intake.claim(intake_id(OWNER, series), explicit=True)
    assert isinstance(claimed, Claimed) and intake.finish(claimed, "job-1")
    fill(intake, third)  # a completed series frees its place


def test_series_zip_is_deterministic() -> None:
    files = {f"1.2.{i}": bytes([i]) * 10 for i in range(3)}
    assert series_zip(files) == series_zip(dict(reversed(list(files.items()))))


def test_a_replay_naming_a_job_not_yet_created_keeps_the_series(client: TestClient, work: Callable[[], bool]) -> None:
    """Review of issue 18: a completer whose lease ran out may still be creating the job its
    Idempotency-Key names. A second completer replaying the key must not end the intake on that
    name (if the first then failed, the series would be lost): it gives the series back (503)."""
    jobs: SeriesJobs = client.app.state.series_jobs  # type: ignore[attr-defined]
    series = fill(jobs.intake, instance_bytes(ct_series(2, seed=14)))
    claimed = jobs.intake.claim(intake_id(OWNER, series), explicit=True)
    assert isinstance(claimed, Claimed)
    key = f"dicom-series:{claimed.generation}"
    upload = Upload(series_zip(claimed.instances), "series.zip", "application/zip")
    print_ = fingerprint(json.dumps({"model": claimed.model}), Inputs(upload, None))
    jobs.store.claim_idempotency_key(OWNER, key, f"{print_}:ghost-job", 60)  # the first completer's claim
    with pytest.raises(ApiError) as caught:
        jobs.complete(claimed)
    assert caught.value.status == 503
    status = jobs.intake.status(OWNER, series)
    assert status is not None and status.state == "receiving" and status.instances == 2  # nothing lost
    jobs.store.release_idempotency_key(OWNER, key)  # the first completer failed and freed its key
    commit = client.post(f"/dicomweb/series/{series}/commit")
    assert commit.status_code == 202, commit.text
    assert work()
    assert client.get(commit.headers["location"]).json()["status"] == "finished"
