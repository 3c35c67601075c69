"""The deliverer's guarantees: leases (a deliverer that dies mid-send does not lose the
delivery), the end hooks for lost workers, and the thread inside a real worker process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.serializers import JSONSerializer

from core import deliveries, job_end
from core.deliveries import Deliveries
from core.settings import Settings
from tests.service import factories
from tests.service.receiver import running_receiver
from workers import deliverer as deliver

SECRET = "worker-side-secret"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "callback_allowed_hosts": ["127.0.0.1"],
            "callback_secret": SecretStr(SECRET),
            "callback_attempts": 3,
            "callback_base_delay": 0.1,
            "callback_timeout": 0.3,
            "callback_lease": 0.6,
            "callback_poll": 0.05,
        }
    )


def submit(client: TestClient, url: str) -> str:
    image, _ = factories.defect_image(64)
    response = client.post(
        "/v1/jobs",
        files={"image": ("a.png", factories.png_bytes(image), "image/png")},
        data={"params": '{"task": "segment"}', "callback_url": url},
    )
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def delivery_id_of(redis_conn: redis.Redis, job_id: str) -> str:
    job = Job.fetch(job_id, connection=redis_conn, serializer=JSONSerializer)
    return job.meta["callback"]["delivery_id"]


def test_a_deliverer_that_dies_mid_send_loses_its_lease_not_the_delivery(
    client: TestClient, work: Callable[[], bool], redis_conn: redis.Redis, settings: Settings
) -> None:
    with running_receiver([200]) as receiver:
        job_id = submit(client, receiver.url)
        assert work()
        deliveries = Deliveries(redis_conn, settings.key_prefix)
        dead = deliveries.claim(10, settings.callback_lease, settings.callback_attempts)  # claimed, never sent
        assert [d.id for d in dead] == [delivery_id_of(redis_conn, job_id)]

        survivor = deliver.Deliverer(redis_conn, settings)
        assert survivor.run_once() == 0  # still leased to the dead one
        time.sleep(settings.callback_lease + 0.1)
        assert survivor.run_once() == 1  # the lease ran out: delivered again, same id
        survivor.close()
        got = receiver.wait_for(1, timeout=5)
    assert got[0].headers["x-lrpseg-delivery"] == dead[0].id
    assert json.loads(got[0].body)["job_id"] == job_id
    status = deliveries.status(dead[0].id, receiver.url)
    assert status.status == "delivered" and status.attempts == 2  # the lost attempt counts
    # The dead deliverer waking up late cannot overwrite the outcome: its lease token is stale.
    assert not deliveries.settle(dead[0], "failed", status_code=None, error="late")
    assert deliveries.status(dead[0].id, receiver.url).status == "delivered"


def test_a_delivery_whose_deliverers_keep_dying_ends_failed(
    client: TestClient, work: Callable[[], bool], redis_conn: redis.Redis, settings: Settings
) -> None:
    job_id = submit(client, "http://127.0.0.1:9/never-called")
    assert work()
    deliveries = Deliveries(redis_conn, settings.key_prefix)
    delivery_id = delivery_id_of(redis_conn, job_id)
    for _ in range(settings.callback_attempts):
        now = time.time() + 3600 * _  # jump past each lease instead of sleeping
        assert [d.id for d in deliveries.claim(10, settings.callback_lease, settings.callback_attempts, now)] == [
            delivery_id
        ]
    assert deliveries.claim(10, settings.callback_lease, settings.callback_attempts, time.time() + 10**5) == []
    status = deliveries.status(delivery_id, "")
    assert status.status == "failed" and status.attempts == 3 and "deliverer stopped" in status.last_error


def test_lost_worker_hook_reports_worker_lost_only_when_no_retry_is_left(
    client: TestClient, redis_conn: redis.Redis, settings: Settings
) -> None:
    job_id = submit(client, "http://127.0.0.1:9/hook")
    job = Job.fetch(job_id, connection=redis_conn, serializer=JSONSerializer)
    deliveries = Deliveries(redis_conn, settings.key_prefix)
    delivery_id = job.meta["callback"]["delivery_id"]

    job.retries_left = 1  # RQ will run it again: it has not ended
    job_end.on_job_failure(job, redis_conn, AbandonedJobError, AbandonedJobError(), None)
    assert not redis_conn.exists(deliveries.key(delivery_id))

    job.retries_left = 0
    job_end.on_job_failure(job, redis_conn, AbandonedJobError, AbandonedJobError(), None)
    body = json.loads(redis_conn.hget(deliveries.key(delivery_id), "body"))
    assert body["status"] == "failed" and body["error"]["code"] == "worker_lost"
    job_end.on_job_failure(job, redis_conn, AbandonedJobError, AbandonedJobError(), None)  # again: still one
    assert redis_conn.zcard(deliveries.due_key) == 1


def test_a_sleeping_deliverer_wakes_when_a_job_ends(
    client: TestClient, work: Callable[[], bool], redis_conn: redis.Redis, settings: Settings
) -> None:
    """Deliverers block on a wake list, not a poll: the callback leaves within ms of the job's
    end even with a 5 s poll."""
    settings = settings.model_copy(update={"callback_poll": 5.0, "callback_lease": 10.0})

    def status_on_arrival(body: bytes) -> str:  # what a receiver that GETs the job at once would see
        job = Job.fetch(json.loads(body)["job_id"], connection=redis_conn, serializer=JSONSerializer)
        return job.get_status(refresh=False).value

    with running_receiver([200], probe=status_on_arrival) as receiver:
        stop = threading.Event()
        thread = deliver.start_thread(redis_conn, settings, stop)
        try:
            time.sleep(0.3)  # asleep in BRPOP by now
            submit(client, receiver.url)
            assert work()
            ended = time.monotonic()
            got = receiver.wait_for(1, timeout=4)
        finally:
            stop.set()
            redis_conn.lpush(Deliveries(redis_conn, settings.key_prefix).wake_key, "stop")  # out of its 5 s BRPOP
            thread.join(timeout=10)
    assert got and got[0].at - ended < 1.0, "the deliverer slept through the poll instead of waking"
    assert got[0].probe == "finished"  # sent only once RQ had stored the job's end


def test_a_delivery_waits_uncounted_until_rq_stored_the_job_end(
    client: TestClient, work: Callable[[], bool], redis_conn: redis.Redis, settings: Settings
) -> None:
    """The hook runs just before RQ stores the end: until the job reads as ended, a claimed
    delivery is handed back without counting an attempt."""
    with running_receiver([200]) as receiver:
        job_id = submit(client, receiver.url)  # queued: RQ has not ended it
        deliveries = Deliveries(redis_conn, settings.key_prefix)
        delivery_id = delivery_id_of(redis_conn, job_id)
        body = {"event": "job.ended", "delivery_id": delivery_id, "job_id": job_id}
        assert deliveries.schedule(
            delivery_id, receiver.url, body, subject=f"job:{job_id}", event="job.ended", ttl=60, wait_for=job_id
        )
        deliverer = deliver.Deliverer(redis_conn, settings)
        assert deliverer.run_once() == 1 and receiver.requests == []
        status = deliveries.status(delivery_id, receiver.url)
        assert status.status == "pending" and status.attempts == 0
        assert work()  # now it has ended (the job's own hook finds the record there: one delivery)
        time.sleep(deliver.POSTPONE + 0.01)
        assert deliverer.run_once() == 1
        deliverer.close()
        assert len(receiver.wait_for(1, timeout=5)) == 1
    assert deliveries.status(delivery_id, receiver.url).attempts == 1


@contextmanager
def trickling_receiver(interval: float = 0.3, limit: float = 8.0) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 (free port) that sends its status line at once, then one byte of a
    header every `interval` s for up to `limit` s: every read of the sender gets a byte, none ends."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(limit)
    done = threading.Event()

    def serve() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            try:
                conn.settimeout(limit)
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                deadline = time.monotonic() + limit
                while not done.is_set() and time.monotonic() < deadline:
                    conn.sendall(b"x")
                    done.wait(interval)
            except OSError:  # the sender hung up
                pass

    thread = threading.Thread(target=serve, name="trickler", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/hook"
    finally:
        done.set()
        server.close()
        thread.join(timeout=10)


def test_a_receiver_that_trickles_its_answer_is_abandoned_at_the_callback_timeout(
    redis_conn: redis.Redis, settings: Settings
) -> None:
    """callback_timeout bounds the whole send, not each read, so a send always ends inside its lease."""
    settings = settings.model_copy(update={"callback_timeout": 1.0, "callback_lease": 3.0, "callback_attempts": 1})
    deliveries = Deliveries(redis_conn, settings.key_prefix)
    with trickling_receiver() as url:
        body = {"event": "job.ended", "delivery_id": "d-trickle"}
        assert deliveries.schedule("d-trickle", url, body, subject="job:none", event="job.ended", ttl=60)
        deliverer = deliver.Deliverer(redis_conn, settings)
        started = time.monotonic()
        assert deliverer.run_once() == 1
        elapsed = time.monotonic() - started
        deliverer.close()
    status = deliveries.status("d-trickle", url)
    assert status.status == "failed" and "no answer within 1 s" in status.last_error, status
    assert settings.callback_timeout - 0.1 <= elapsed < settings.callback_timeout + 0.5, elapsed


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [deliver.backoff(n, 2.0, 20.0) for n in range(1, 6)] == [2.0, 4.0, 8.0, 16.0, 20.0]


@pytest.mark.slow
def test_a_worker_process_delivers_callbacks_from_its_own_thread(
    client: TestClient, redis_conn: redis.Redis, settings: Settings, tmp_path: Path
) -> None:
    """`python -m launch worker`: the job runs, and the process's deliverer POSTs the callback."""
    factories.write_models(tmp_path / "models")
    kwargs = redis_conn.connection_pool.connection_kwargs
    url = f"redis://{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRPSEG_") and k != "REDIS_URL"}
    env.update(
        {
            "LRPSEG_REDIS_URL": url,
            "LRPSEG_QUEUE_NAME": settings.queue_name,
            "LRPSEG_KEY_PREFIX": settings.key_prefix,
            "LRPSEG_MODELS_DIR": str(tmp_path / "models"),
            "LRPSEG_DEFAULT_MODEL": factories.SEGMENTER,
            "LRPSEG_DEVICE": "cpu",
            "LRPSEG_TORCH_THREADS": "1",
            "LRPSEG_LOG_LEVEL": "warning",
            "LRPSEG_CALLBACK_SECRET": SECRET,
            "LRPSEG_CALLBACK_POLL": "0.1",
        }
    )
    with running_receiver([503, 200]) as receiver:
        job_id = submit(client, receiver.url)
        proc = subprocess.Popen([sys.executable, "-m", "launch", "worker"], env=env, cwd=tmp_path)
        try:
            got = receiver.wait_for(2, timeout=90)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert len(got) == 2, "the worker process did not deliver (and retry) the callback"
    for request in got:
        timestamp = request.headers["x-lrpseg-timestamp"]
        assert deliveries.verify(SECRET, timestamp, request.body, request.headers["x-lrpseg-signature"])
    assert json.loads(got[1].body)["job_id"] == job_id and json.loads(got[1].body)["status"] == "finished"
    view = client.get(f"/v1/jobs/{job_id}").json()
    assert view["callback"]["status"] == "delivered" and view["callback"]["attempts"] == 2


@pytest.mark.parametrize(("lease", "timeout", "limit"), [(30.0, 5.0, 5), (0.6, 0.3, 1), (10.0, 1.0, 9), (6.0, 5.0, 1)])
def test_a_deliverer_claims_no_more_than_it_can_send_inside_one_lease(
    redis_conn: redis.Redis, settings: Settings, lease: float, timeout: float, limit: int
) -> None:
    """Sends are sequential, each bounded by callback_timeout: a claim of N must end inside the lease."""
    deliverer = deliver.Deliverer(
        redis_conn, settings.model_copy(update={"callback_lease": lease, "callback_timeout": timeout})
    )
    try:
        assert deliverer.claim_limit() == limit
        assert deliverer.claim_limit() * timeout < lease
    finally:
        deliverer.close()


def test_run_once_claims_at_most_the_claim_limit(redis_conn: redis.Redis, settings: Settings) -> None:
    settings = settings.model_copy(update={"callback_lease": 1.0, "callback_timeout": 0.3})  # limit 2
    deliveries = Deliveries(redis_conn, settings.key_prefix)
    with running_receiver([200] * 5) as receiver:
        for n in range(5):
            body = {"event": "job.ended", "delivery_id": f"d{n}"}
            assert deliveries.schedule(f"d{n}", receiver.url, body, subject=f"t:{n}", event="job.ended", ttl=60)
        deliverer = deliver.Deliverer(redis_conn, settings)
        try:
            assert [deliverer.run_once() for _ in range(4)] == [2, 2, 1, 0]
        finally:
            deliverer.close()
        assert len(receiver.wait_for(5, timeout=5)) == 5
