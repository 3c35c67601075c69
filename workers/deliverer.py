"""The deliverer: a thread in every worker process that sends what core.job_end recorded:
callbacks, and DICOM results to PACS destinations (workers.pacs_sender).

It claims due records (with a lease), sends them with a short timeout and reschedules
failures with exponential backoff; the same attempts, delays and status for every kind.

`callback_timeout` bounds one whole send (connect, request, status and headers), not each
socket operation: httpx's timeouts are per read, so a receiver trickling a byte at a time
would otherwise hold the deliverer past its lease. `SendDeadline` enforces the total.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import httpcore
import httpx
from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

import lrpseg
from core import deliveries as callbacks
from core.deliveries import CALLBACK, Deliveries, Delivery
from core.settings import Settings
from core.store import Store
from workers.pacs_sender import Outcome as PacsOutcome
from workers.pacs_sender import PacsSender

log = logging.getLogger("lrpseg.callbacks")

ENDED = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}
UNMARKED_GRACE = 10.0  # s: send anyway if RQ still has not marked the job ended by then
POSTPONE = 0.01  # s: re-check interval while RQ marks the job ended (a few ms after the hook)


# ---- the deliverer ------------------------------------------------------------------------------------


def backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): base, 2 base, 4 base, ... <= cap."""
    return min(cap, base * 2.0 ** (attempt - 1))


class SendDeadline:
    """The wall-clock end (time.monotonic) of the send in progress, or None between sends; every
    socket operation of the client waits at most until then. One per Deliverer (one send at a time)."""

    def __init__(self) -> None:
        self.at: float | None = None

    def bound(self, timeout: float | None, expired: type[Exception]) -> float | None:
        """`timeout` cut to what is left of the send; `expired` raised when nothing is left."""
        if self.at is None:
            return timeout
        left = self.at - time.monotonic()
        if left <= 0:
            raise expired("the callback's time is up")
        return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream, deadline: SendDeadline) -> None:
        self._stream, self._deadline = stream, deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._deadline.bound(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._deadline.bound(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None) -> Any:
        timeout = self._deadline.bound(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout), self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.SyncBackend):
    def __init__(self, deadline: SendDeadline) -> None:
        self._deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        timeout = self._deadline.bound(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(super().connect_tcp(host, port, timeout, local_address, socket_options), self._deadline)


def deadline_transport(deadline: SendDeadline) -> httpx.HTTPTransport:
    """httpx's transport (no proxy from the environment) whose sockets honour `deadline`. httpx
    takes no network backend, so its connection pool is replaced by an equal one that has ours."""
    transport = httpx.HTTPTransport(trust_env=False)
    limits = httpx.Limits()
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=_DeadlineBackend(deadline),
    )
    return transport


class Deliverer:
    """Sends due deliveries of one Redis; any number of them may run against the same Redis."""

    def __init__(
        self,
        connection: Redis,
        settings: Settings,
        *,
        client: httpx.Client | None = None,
        store: Store | None = None,
    ) -> None:
        self.connection = connection
        self.settings = settings
        self.deliveries = Deliveries(connection, settings.key_prefix)
        self.deadline = SendDeadline()
        self.client = client or httpx.Client(
            transport=deadline_transport(self.deadline),
            timeout=httpx.Timeout(settings.callback_timeout),
            follow_redirects=False,  # a redirect could point anywhere: not followed, counts as a failure
            trust_env=False,  # no proxy from the environment: callbacks go where the allow-list says
            headers={"User-Agent": f"lrpseg/{lrpseg.__version__}"},
        )
        secret = settings.callback_secret
        self.secret = secret.get_secret_value() if secret is not None else None
        self.pacs = PacsSender(  # `store`: where the results are read (the worker's; None: none to send)
            settings,
            store,
            httpx.Client(
                transport=deadline_transport(self.deadline),
                timeout=httpx.Timeout(settings.dicom_send_timeout),
                follow_redirects=False,
                trust_env=False,
                headers={"User-Agent": f"lrpseg/{lrpseg.__version__}"},
            ),
        )

    def claim_limit(self) -> int:
        """Deliveries claimed at once: all of them must be sent, one after another, inside the lease."""
        s = self.settings
        pacs = bool(s.dicomweb_allowed_hosts or s.dimse_destination)  # PACS deliveries can exist
        longest = max(s.callback_timeout, s.dicom_send_timeout) if pacs else s.callback_timeout
        return max(1, int(s.callback_lease // longest) - 1)

    def run_once(self) -> int:
        """Send what is due now; the number of deliveries claimed."""
        s = self.settings
        claimed = self.deliveries.claim(self.claim_limit(), s.callback_lease, s.callback_attempts)
        for delivery in claimed:
            self.send(delivery)
        return len(claimed)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                if self.run_once():
                    continue
                due = self.deliveries.next_due()
                wait = self.settings.callback_poll if due is None else due - time.time()
                self.deliveries.wait(min(self.settings.callback_poll, max(0.0, wait)))
            except Exception:
                log.warning("deliverer could not reach Redis")
                stop.wait(self.settings.callback_poll)

    def send(self, delivery: Delivery) -> None:
        if self._not_marked_ended(delivery):
            self.deliveries.postpone(delivery, time.time() + POSTPONE)
            return
        if delivery.kind != CALLBACK:
            self.send_results(delivery)
            return
        s = self.settings
        if self.secret is None:  # the worker lacks the secret the API accepted the URL with
            self._settle_failure(delivery, None, "this worker has no callback_secret; the callback cannot be signed")
            return
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            callbacks.SIGNATURE_HEADER: callbacks.sign(self.secret, timestamp, delivery.body),
            callbacks.TIMESTAMP_HEADER: timestamp,
            callbacks.DELIVERY_HEADER: delivery.id,
            callbacks.EVENT_HEADER: delivery.event,
        }
        status: int | None = None
        try:
            status = self._post(delivery, headers)
        except httpx.TimeoutException:
            error = f"no answer within {s.callback_timeout:g} s"
        except httpx.HTTPError as exc:
            error = f"request failed ({type(exc).__name__})"
        else:
            if 200 <= status < 300:
                self.deliveries.settle(delivery, "delivered", status_code=status, error=None)
                log.info("callback %s delivered (attempt %d)", delivery.id, delivery.attempts)
                return
            error = f"HTTP {status}"
        self._settle_failure(delivery, status, error)

    def send_results(self, delivery: Delivery) -> None:
        """A job's DICOM results to its PACS destination, all of it within `dicom_send_timeout`."""
        self.deadline.at = time.monotonic() + self.settings.dicom_send_timeout
        try:
            outcome = self.pacs.send(delivery)
        except Exception as exc:  # a peer's malformed answer must not stop the deliverer
            outcome = PacsOutcome(False, error=f"the send failed ({type(exc).__name__})")
        finally:
            self.deadline.at = None
        if outcome.delivered:
            self.deliveries.settle(delivery, "delivered", status_code=outcome.status_code, error=None)
            log.info("%s delivery %s delivered (attempt %d)", delivery.kind, delivery.id, delivery.attempts)
        elif outcome.final:
            self.deliveries.settle(delivery, "failed", status_code=outcome.status_code, error=outcome.error)
            log.warning("%s delivery %s failed: %s", delivery.kind, delivery.id, outcome.error)
        else:
            self._settle_failure(delivery, outcome.status_code, outcome.error or "failed")

    def _post(self, delivery: Delivery, headers: dict[str, str]) -> int:
        """The response's status; the body is never read. All of it within `callback_timeout`."""
        self.deadline.at = time.monotonic() + self.settings.callback_timeout
        try:
            with self.client.stream("POST", delivery.url, content=delivery.body, headers=headers) as response:
                return response.status_code
        finally:
            self.deadline.at = None

    def _settle_failure(self, delivery: Delivery, status: int | None, error: str) -> None:
        s = self.settings
        if delivery.attempts >= s.callback_attempts:
            self.deliveries.settle(delivery, "failed", status_code=status, error=error)
            log.warning("%s %s failed after %d attempts: %s", delivery.kind, delivery.id, delivery.attempts, error)
            return
        delay = backoff(delivery.attempts, s.callback_base_delay, s.callback_max_delay)
        self.deliveries.settle(delivery, "retry", status_code=status, error=error, next_at=time.time() + delay)
        log.info(
            "%s %s attempt %d failed (%s); next in %.1f s", delivery.kind, delivery.id, delivery.attempts, error, delay
        )

    def _not_marked_ended(self, delivery: Delivery) -> bool:
        """True while RQ has not yet stored the end of the job the delivery waits for (the hook
        runs just before that), so a receiver that GETs the job at once sees its result."""
        if not delivery.wait_for or time.time() - delivery.created > UNMARKED_GRACE:
            return False
        try:
            job = Job.fetch(delivery.wait_for, connection=self.connection, serializer=JSONSerializer)
        except NoSuchJobError:
            return False
        return job.get_status(refresh=False) not in ENDED

    def close(self) -> None:
        self.client.close()
        self.pacs.client.close()


def start_thread(
    connection: Redis, settings: Settings, stop: threading.Event, store: Store | None = None
) -> threading.Thread:
    """The deliverer as a daemon thread of this process, until `stop` is set (`store`: where
    finished jobs' DICOM results are read for PACS deliveries)."""
    deliverer = Deliverer(connection, settings, store=store)

    def loop() -> None:
        try:
            deliverer.run(stop)
        finally:
            deliverer.close()

    thread = threading.Thread(target=loop, name="lrpseg-callbacks", daemon=True)
    thread.start()
    return thread
