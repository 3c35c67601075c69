"""Prometheus metrics: request counters here, queue depth and job stages read from Redis at scrape."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from rq import Queue

from core.stats import Stats

REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0)


class QueueCollector(Collector):
    """Reads the queue, its registries and the workers' Redis counters at each scrape."""

    def __init__(self, queue: Queue, stats: Stats, worker_max_age: float) -> None:
        self.queue, self.stats, self.worker_max_age = queue, stats, worker_max_age

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("lrpseg_queue_depth", "jobs by RQ state", labels=["state"])
        depth.add_metric(["queued"], self.queue.count)
        depth.add_metric(["started"], self.queue.started_job_registry.count)
        depth.add_metric(["failed"], self.queue.failed_job_registry.count)
        yield depth
        live = self.stats.live_workers(self.worker_max_age)
        workers = GaugeMetricFamily("lrpseg_workers", "workers seen within their heartbeat interval")
        workers.add_metric([], len(live))
        yield workers
        memory = GaugeMetricFamily(
            "lrpseg_worker_device_memory_bytes",
            "CUDA memory of each worker's process at its last heartbeat (absent on CPU)",
            labels=["worker", "device", "kind"],
        )
        for worker in live:
            for kind, value in sorted(worker.device_memory.items()):
                memory.add_metric([worker.name, worker.device, kind], value)
        if memory.samples:  # CPU-only deployments have no such series at all
            yield memory
        jobs = CounterMetricFamily("lrpseg_jobs", "jobs ended, by outcome and model", labels=["status", "model"])
        for (status, model), count in sorted(self.stats.job_counts().items()):
            jobs.add_metric([status, model], count)
        yield jobs
        stages = HistogramMetricFamily(
            "lrpseg_job_stage_duration_seconds", "worker time per pipeline stage", labels=["stage", "model"]
        )
        for h in self.stats.stage_histograms():
            buckets = [(("+Inf" if b == float("inf") else repr(b)), c) for b, c in h.buckets]
            stages.add_metric([h.stage, h.model], buckets, h.total)
        yield stages


class ServiceMetrics:
    """One registry per app, so several apps (tests) never clash."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "lrpseg_http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "lrpseg_http_request_duration_seconds",
            "HTTP latency by route template and status class (2xx, 4xx, 5xx)",
            ["route", "status_class"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.submitted = Counter("lrpseg_jobs_submitted", "jobs enqueued", ["model"], registry=self.registry)
        self.rejected = Counter("lrpseg_jobs_rejected", "submissions refused", ["reason"], registry=self.registry)
        self._queue_collector: QueueCollector | None = None

    def attach_queue(self, queue: Queue, stats: Stats, worker_max_age: float) -> None:
        if self._queue_collector is None:
            self._queue_collector = QueueCollector(queue, stats, worker_max_age)
            self.registry.register(self._queue_collector)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route, f"{status // 100}xx").observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
