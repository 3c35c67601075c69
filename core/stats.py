"""Counters that workers write to Redis and the API exposes on /metrics.

Workers may run on other machines, so stage durations and job outcomes are aggregated in
Redis (one hash each, HINCRBY per observation) instead of in a process-local registry.
Workers also announce themselves (models loaded, device) with a heartbeat timestamp.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

STAGE_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SEP = "|"


@dataclass(frozen=True)
class StageHistogram:
    stage: str
    model: str
    buckets: list[tuple[float, int]]  # (upper bound, cumulative count), +Inf last
    total: float
    count: int


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    seen: float
    models: list[str]
    device: str
    errors: dict[str, str]
    # bytes, on CUDA only: torch.cuda.memory_allocated / max_memory_allocated at the heartbeat
    device_memory: dict[str, int] = field(default_factory=dict)


class Stats:
    def __init__(self, connection: Redis, prefix: str = "lrpseg") -> None:
        self.connection = connection
        self.stages_key = f"{prefix}:stats:stages"
        self.jobs_key = f"{prefix}:stats:jobs"
        self.workers_key = f"{prefix}:workers"

    # ---- written by workers --------------------------------------------------------

    def observe_stages(self, model: str, seconds_by_stage: dict[str, float]) -> None:
        with self.connection.pipeline(transaction=False) as pipe:
            for stage, seconds in seconds_by_stage.items():
                base = f"{stage}{SEP}{model}{SEP}"
                bucket = next((b for b in STAGE_BUCKETS if seconds <= b), math.inf)
                pipe.hincrby(self.stages_key, f"{base}{bucket!r}", 1)
                pipe.hincrbyfloat(self.stages_key, f"{base}sum", seconds)
                pipe.hincrby(self.stages_key, f"{base}count", 1)
            pipe.execute()

    def count_job(self, model: str, status: str) -> None:
        self.connection.hincrby(self.jobs_key, f"{status}{SEP}{model}", 1)

    def announce_worker(self, info: WorkerInfo) -> None:
        payload = {"seen": info.seen, "models": info.models, "device": info.device, "errors": info.errors}
        if info.device_memory:
            payload["device_memory"] = info.device_memory
        self.connection.hset(self.workers_key, info.name, json.dumps(payload))

    def retire_worker(self, name: str) -> None:
        self.connection.hdel(self.workers_key, name)

    # ---- read by the API ------------------------------------------------------------

    def stage_histograms(self) -> list[StageHistogram]:
        raw = {k.decode(): v.decode() for k, v in self.connection.hgetall(self.stages_key).items()}
        series: dict[tuple[str, str], dict[str, str]] = {}
        for key, value in raw.items():
            stage, model, part = key.split(SEP)
            series.setdefault((stage, model), {})[part] = value
        out = []
        for (stage, model), parts in sorted(series.items()):
            cumulative, buckets = 0, []
            for bound in (*STAGE_BUCKETS, math.inf):
                cumulative += int(parts.get(repr(bound), 0))
                buckets.append((bound, cumulative))
            out.append(StageHistogram(stage, model, buckets, float(parts.get("sum", 0.0)), int(parts.get("count", 0))))
        return out

    def job_counts(self) -> dict[tuple[str, str], int]:
        raw = self.connection.hgetall(self.jobs_key)
        counts: dict[tuple[str, str], int] = {}
        for key, value in raw.items():
            model, _, status = key.decode().partition(SEP)
            counts[(model, status)] = int(value)
        return counts

    def live_workers(self, max_age: float) -> list[WorkerInfo]:
        """Workers that announced themselves within `max_age` seconds; older entries are pruned."""
        now, live, stale = time.time(), [], []
        for name, blob in self.connection.hgetall(self.workers_key).items():
            data: dict[str, Any] = json.loads(blob)
            if now - float(data["seen"]) > max_age:
                stale.append(name)
                continue
            memory = {str(k): int(v) for k, v in (data.get("device_memory") or {}).items()}
            live.append(WorkerInfo(name.decode(), data["seen"], data["models"], data["device"], data["errors"], memory))
        if stale:
            self.connection.hdel(self.workers_key, *stale)
        return sorted(live, key=lambda w: w.name)
