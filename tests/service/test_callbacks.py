"""Completion callbacks through the API, a real RQ worker and a real HTTP receiver on 127.0.0.1.

The receiver fails the first two attempts (500), then accepts: the deliverer must retry with
exponential backoff, sign every attempt, keep the delivery id, and the job view must say
`delivered` after 3 attempts. A receiver that never answers in time ends as `failed`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from core import deliveries
from core.settings import Settings
from core.store import Store
from lrpseg.registry import Registry
from schemas.callbacks import JobEndedEvent
from service import callback_urls
from tests.service import factories
from tests.service.receiver import Received, running_receiver
from workers import deliverer as deliver
from workers.worker import build_worker

SECRET = "s3cret-for-tests"
BASE_DELAY = 0.4
POLL = 0.05


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "callback_allowed_hosts": ["127.0.0.1", "*.example.org"],
            "callback_secret": SecretStr(SECRET),
            "callback_attempts": 4,
            "callback_base_delay": BASE_DELAY,
            "callback_timeout": 0.5,
            "callback_lease": 5.0,
            "callback_poll": POLL,
        }
    )


@contextmanager
def deliverer(redis_conn: redis.Redis, settings: Settings) -> Iterator[None]:
    """The same deliverer thread a worker process runs, for the length of the block."""
    stop = threading.Event()
    thread = deliver.start_thread(redis_conn, settings, stop)
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive()


def post_job(client: TestClient, callback_url: str | None, **data: str):
    image, _ = factories.defect_image(64)
    form = {"params": json.dumps({"task": "segment"}), **data}
    if callback_url is not None:
        form["callback_url"] = callback_url
    return client.post("/v1/jobs", files={"image": ("part.png", factories.png_bytes(image), "image/png")}, data=form)


def check_signature(request: Received) -> dict:
    timestamp = request.headers["x-lrpseg-timestamp"]
    expected = deliveries.sign(SECRET, timestamp, request.body)
    assert request.headers["x-lrpseg-signature"] == expected
    assert deliveries.verify(SECRET, timestamp, request.body, request.headers["x-lrpseg-signature"])
    assert abs(int(timestamp) - time.time()) < 30
    assert request.headers["content-type"] == "application/json"
    return json.loads(request.body)


def wait_for_callback_status(client: TestClient, location: str, status: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        view = client.get(location).json()
        if view["callback"]["status"] == status or time.monotonic() > deadline:
            return view
        time.sleep(0.05)


def test_callback_retried_with_backoff_signed_then_delivered(
    client: TestClient, work: Callable[[], bool], redis_conn: redis.Redis, settings: Settings
) -> None:
    with running_receiver([500, 500, 200]) as receiver:
        response = post_job(client, receiver.url)
        assert response.status_code == 202, response.text
        location = response.headers["location"]
        job_id = response.json()["job_id"]
        before = client.get(location).json()["callback"]
        assert before["status"] == "pending" and before["attempts"] == 0 and before["url"] == receiver.url

        assert work()
        with deliverer(redis_conn, settings):
            got = receiver.wait_for(3, timeout=15)
            view = wait_for_callback_status(client, location, "delivered")
        time.sleep(2 * BASE_DELAY)  # nothing more may arrive after a 2xx
        assert len(receiver.requests) == 3

    bodies = [check_signature(r) for r in got]
    assert bodies[0] == bodies[1] == bodies[2]  # the same body each time; only the timestamp is fresh
    body = bodies[0]
    assert body["event"] == "job.ended" and body["job_id"] == job_id and body["status"] == "finished"
    assert JobEndedEvent.model_validate(body).model_dump(mode="json") == body  # the documented schema, exactly
    assert body["error"] is None and body["links"]["self"] == location
    ids = {r.headers["x-lrpseg-delivery"] for r in got}
    assert ids == {body["delivery_id"]} and {r.headers["x-lrpseg-event"] for r in got} == {"job.ended"}

    # Backoff: attempt 2 waits base, attempt 3 waits 2 x base (plus the poll and HTTP time).
    gaps = [b.at - a.at for a, b in zip(got, got[1:], strict=False)]
    assert BASE_DELAY * 0.95 <= gaps[0] < BASE_DELAY + 0.5, gaps
    assert 2 * BASE_DELAY * 0.95 <= gaps[1] < 2 * BASE_DELAY + 0.5, gaps

    callback = view["callback"]
    assert callback["status"] == "delivered" and callback["attempts"] == 3 and callback["max_attempts"] == 4
    assert callback["last_status_code"] == 200 and callback["last_error"] is None
    assert callback["delivery_id"] == body["delivery_id"] and callback["delivered_at"] is not None


def test_receiver_that_never_answers_ends_failed(
    client: TestClient, work: Callable[[], bool], redis_conn: redis.Redis, settings: Settings
) -> None:
    settings = settings.model_copy(update={"callback_attempts": 3, "callback_base_delay": 0.1})
    with running_receiver([200], delay=1.5) as receiver:
        location = post_job(client, receiver.url).headers["location"]
        assert work()
        started = time.monotonic()
        with deliverer(redis_conn, settings):
            view = wait_for_callback_status(client, location, "failed", timeout=15)
        elapsed = time.monotonic() - started
        assert len(receiver.wait_for(3, timeout=1)) == 3
    callback = view["callback"]
    assert callback["status"] == "failed" and callback["attempts"] == 3
    assert callback["last_status_code"] is None and "no answer within 0.5 s" in callback["last_error"]
    assert callback["next_attempt_at"] is None
    assert 3 * 0.5 + 0.1 + 0.2 <= elapsed < 8, elapsed  # three timeouts and two backoffs, bounded


def test_failed_job_sends_its_error(
    client: TestClient, work: Callable[[], bool], redis_conn: redis.Redis, settings: Settings
) -> None:
    with running_receiver([204]) as receiver:
        response = post_job(client, receiver.url)
        job_id = response.json()["job_id"]
        Store(redis_conn, settings.key_prefix).delete_inputs(job_id)  # the worker will find no inputs
        work()
        with deliverer(redis_conn, settings):
            got = receiver.wait_for(1, timeout=10)
            view = wait_for_callback_status(client, response.headers["location"], "delivered")
    body = check_signature(got[0])
    assert body["status"] == "failed" and body["error"]["code"] == "inputs_missing"
    assert view["status"] == "failed" and view["callback"]["last_status_code"] == 204


def test_a_job_whose_worker_died_sends_worker_lost_when_a_reader_resolves_it(
    make_client: Callable[[Settings], TestClient], redis_conn: redis.Redis, registry: Registry, settings: Settings
) -> None:
    """GET /v1/jobs/{id} resolves the lost job in a thread-pool thread: RQ runs the job's on_failure
    hook there too, and it must record the worker_lost callback (SIGALRM only works on the main thread)."""
    settings = settings.model_copy(update={"job_retries": 0})
    client = make_client(settings)
    assert threading.current_thread() is threading.main_thread()
    with running_receiver([204]) as receiver:
        response = post_job(client, receiver.url)
        job_id, location = response.json()["job_id"], response.headers["location"]
        # A worker takes the job as it does to run it, then dies: nobody renews its claim.
        queue = client.app.state.queue
        worker = build_worker(settings, connection=redis_conn, registry=registry, heartbeat=False)
        job, _ = queue.dequeue_any([queue], None, connection=redis_conn, serializer=queue.serializer)
        assert job.id == job_id
        worker.prepare_execution(job)
        worker.prepare_job_execution(job)
        assert client.get(location).json()["status"] == "started"
        # job_lost_after s later: no claim (it never took one), last seen alive long ago (core.claims)
        redis_conn.zadd(f"{settings.key_prefix}:open", {job_id: time.time() - settings.job_lost_after - 1}, xx=True)

        view = client.get(location).json()
        assert view["status"] == "failed" and view["error"]["code"] == "worker_lost"
        assert view["callback"] is not None and view["callback"]["status"] == "pending"
        with deliverer(redis_conn, settings):
            got = receiver.wait_for(1, timeout=10)
            view = wait_for_callback_status(client, location, "delivered")
    assert got, "the worker_lost callback was never recorded"
    body = check_signature(got[0])
    assert body["job_id"] == job_id and body["status"] == "failed" and body["error"]["code"] == "worker_lost"
    assert view["callback"]["status"] == "delivered" and view["callback"]["attempts"] == 1


def test_jobs_without_callback_have_none(client: TestClient, work: Callable[[], bool]) -> None:
    location = post_job(client, None).headers["location"]
    assert work()
    view = client.get(location).json()
    assert view["status"] == "finished" and view["callback"] is None


def test_explain_accepts_a_callback(
    client: TestClient, work: Callable[[], bool], redis_conn: redis.Redis, settings: Settings
) -> None:
    with running_receiver([200]) as receiver:
        image, _ = factories.defect_image(64)
        response = client.post(
            "/v1/explain?wait=0",
            files={"image": ("a.png", factories.png_bytes(image), "image/png")},
            data={"params": '{"task": "segment"}', "callback_url": receiver.url},
        )
        assert response.status_code == 202
        assert work()
        with deliverer(redis_conn, settings):
            got = receiver.wait_for(1, timeout=10)
    assert check_signature(got[0])["job_id"] == response.json()["job_id"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://127.0.0.1/x", "http:// or https://"),
        ("http://10.1.2.3/hook", "not in this server's callback_allowed_hosts"),
        ("http://localhost:9/hook", "not in this server's callback_allowed_hosts"),
        ("http://evil.com/hook", "not in this server's callback_allowed_hosts"),
        ("http://example.org.evil.com/hook", "not in this server's callback_allowed_hosts"),
        ("http://user:pw@127.0.0.1/hook", "credentials"),
        ("http://127.0.0.1:99999/hook", "not a valid URL"),
        ("http:///hook", "has no host"),
        ("not a url", "http:// or https://"),
    ],
)
def test_bad_or_disallowed_callback_urls_are_422(client: TestClient, url: str, message: str) -> None:
    response = post_job(client, url)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["errors"][0]["field"] == "callback_url" and message in problem["detail"]
    assert client.app.state.queue.count == 0


def test_allowed_callback_hosts(client: TestClient) -> None:
    for url in ("http://127.0.0.1:8080/a", "https://ris.example.org/hook", "HTTPS://PACS.Example.ORG/h?x=1"):
        assert post_job(client, url).status_code == 202, url


def test_callbacks_are_off_unless_configured(make_client, settings: Settings) -> None:
    off = make_client(settings.model_copy(update={"callback_allowed_hosts": [], "callback_secret": None}))
    response = post_job(off, "http://127.0.0.1:8080/hook")
    assert response.status_code == 422 and "callbacks are disabled" in response.json()["detail"]
    https_only = make_client(settings.model_copy(update={"callback_require_https": True}))
    assert post_job(https_only, "http://127.0.0.1:8080/hook").status_code == 422
    assert post_job(https_only, "https://127.0.0.1:8443/hook").status_code == 202


def test_idempotency_key_covers_the_callback_url(client: TestClient) -> None:
    image, _ = factories.defect_image(64)
    files = {"image": ("part.png", factories.png_bytes(image), "image/png")}
    headers = {"Idempotency-Key": "k-1"}
    one = client.post("/v1/jobs", files=files, data={"callback_url": "http://127.0.0.1:1/a"}, headers=headers)
    again = client.post("/v1/jobs", files=files, data={"callback_url": "http://127.0.0.1:1/a"}, headers=headers)
    other = client.post("/v1/jobs", files=files, data={"callback_url": "http://127.0.0.1:1/b"}, headers=headers)
    assert one.json()["job_id"] == again.json()["job_id"] and other.status_code == 422


def test_allowed_hosts_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LRPSEG_CALLBACK_ALLOWED_HOSTS", "ris.example.org, *.pacs.example.org,10.0.0.0/8")
    monkeypatch.setenv("LRPSEG_CALLBACK_SECRET", "x")
    s = Settings()
    assert s.callback_allowed_hosts == ["ris.example.org", "*.pacs.example.org", "10.0.0.0/8"]
    assert callback_urls.check_callback_url("https://10.20.30.40/h", s.callback_allowed_hosts, s.callback_secret)
    assert callback_urls.check_callback_url("https://a.pacs.example.org/h", s.callback_allowed_hosts, s.callback_secret)
    monkeypatch.setenv("LRPSEG_CALLBACK_ALLOWED_HOSTS", "http://x/y")
    with pytest.raises(ValueError, match="not a host name"):
        Settings()
    monkeypatch.setenv("LRPSEG_CALLBACK_ALLOWED_HOSTS", "ris.example.org")
    monkeypatch.delenv("LRPSEG_CALLBACK_SECRET")
    with pytest.raises(ValueError, match="needs callback_secret"):
        Settings()


def test_the_embedded_default_allows_loopback_callbacks_once_a_secret_is_set() -> None:
    from service.serve import with_loopback_callbacks

    assert with_loopback_callbacks(Settings()).callback_allowed_hosts == []  # no secret: callbacks stay off
    on = with_loopback_callbacks(Settings(callback_secret="x"))
    for url in ("http://127.0.0.1:9000/h", "http://localhost/h", "http://[::1]:8080/h"):
        assert callback_urls.check_callback_url(url, on.callback_allowed_hosts, on.callback_secret) == url
    with pytest.raises(Exception, match="not in this server"):
        callback_urls.check_callback_url("http://10.0.0.1/h", on.callback_allowed_hosts, on.callback_secret)
    listed = Settings(callback_secret="x", callback_allowed_hosts="ris.example.org")
    assert with_loopback_callbacks(listed).callback_allowed_hosts == ["ris.example.org"]  # the operator's list wins
