"""What a worker process holds for its whole life: Redis, the models (loaded once), the device.

RQ calls the job function by name; the function finds this runtime with `current()`. Models
are loaded before the first job and never in a forked child (the worker does not fork), so
CUDA is initialised once, in the process that uses it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from redis import Redis
from redis.client import Pipeline
from torch import nn

from core import liveness
from core.artifacts import open_artifacts
from core.claims import Claims
from core.connect import connect
from core.settings import Settings, get_settings
from core.stats import Stats, WorkerInfo
from core.store import Store
from lrpseg.heap import pin_mmap_threshold
from lrpseg.pipeline import warm_up
from lrpseg.registry import ModelInfo, Registry, default_registry
from lrpseg.render.encoding import PngEncoder

log = logging.getLogger("lrpseg.worker")
HEARTBEAT_JOIN_S = 2.0  # how long stop() waits for a beat in flight before it retires the record


def deterministic_kernels(device: torch.device) -> None:
    """On CUDA, ask for run-to-run identical kernels (docs/interop.md): cuDNN's deterministic
    algorithms without autotuning, cuBLAS with a fixed workspace, and torch's deterministic mode
    (warn_only: an op without a deterministic CUDA kernel warns instead of failing the job).
    Before the first CUDA call, since cuBLAS reads its workspace setting once. CPU kernels are
    already deterministic for a fixed thread count and batch size; nothing is changed there."""
    if device.type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def device_memory(device: torch.device) -> dict[str, int]:
    """What the caching allocator holds for this process on a CUDA device; {} elsewhere."""
    if device.type != "cuda":
        return {}
    return {
        "allocated": int(torch.cuda.memory_allocated(device)),
        "max_allocated": int(torch.cuda.max_memory_allocated(device)),
        "reserved": int(torch.cuda.memory_reserved(device)),
    }


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name} requested but CUDA is not available")
    return device


@dataclass
class WorkerRuntime:
    settings: Settings
    connection: Redis
    registry: Registry
    device: torch.device
    name: str
    store: Store = field(init=False)
    stats: Stats = field(init=False)
    loaded: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    threads: list[threading.Thread] = field(default_factory=list)  # heartbeat and deliverer, all starts
    _stop: threading.Event = field(default_factory=threading.Event)  # this start's; a new one per resume()
    claims: Claims = field(init=False)
    claim_tokens: dict[str, str] = field(default_factory=dict)  # job id -> the claim this process runs it under
    # PNGs are encoded by these threads while the job's masks and metrics run (lrpseg.render.encoding)
    png_encoder: PngEncoder = field(default_factory=PngEncoder)

    def __post_init__(self) -> None:
        prefix = self.settings.key_prefix
        keys = Redis.from_url(self.settings.key_redis_url) if self.settings.key_redis_url else None
        artifacts = open_artifacts(self.settings.artifact_store, self.connection, prefix)
        self.store = Store(self.connection, prefix, artifacts, keys=keys)
        self.stats = Stats(self.connection, self.settings.key_prefix)
        self.claims = Claims(self.connection, self.settings.key_prefix, self.settings.job_lost_after)

    def holds_claim(self, job_id: str) -> bool:
        """Whether this process still owns the job (always, for a job run outside ModelWorker)."""
        token = self.claim_tokens.get(job_id)
        return token is None or self.claims.holds(job_id, token)

    def end_write(self, job_id: str, write: Callable[[Pipeline], object]) -> None:
        """One transaction of the job's end, committed only while this process holds its claim."""
        token = self.claim_tokens.get(job_id)
        if token is None:
            with self.connection.pipeline() as pipe:
                write(pipe)
                pipe.execute()
        else:
            self.claims.fenced(job_id, token, write)

    def preload(self) -> None:
        """Load the models once; a model that fails is reported (readyz), not fatal."""
        infos = self.registry.list()
        if self.settings.preload == "default":
            infos = [self.registry.get(self.registry.default_id)]
        for info in infos:
            try:
                model = self.registry.load(info.id, device=str(self.device))
                warm_up(model, info, self.device)
                self.loaded.append(info.id)
            except Exception as exc:
                log.error("model %s failed to load: %s", info.id, type(exc).__name__)
                self.errors[info.id] = type(exc).__name__

    def model(self, ref: str) -> tuple[ModelInfo, nn.Module]:
        info = self.registry.get(ref)
        return info, self.registry.load(info.id, device=str(self.device))

    def announce(self) -> None:
        info = WorkerInfo(self.name, time.time(), sorted(self.loaded), str(self.device), dict(self.errors))
        self.stats.announce_worker(replace(info, device_memory=device_memory(self.device)))

    def start_heartbeat(self) -> None:
        """Re-announce every `worker_heartbeat` seconds, also while a job runs, until stop()."""
        stop = self._stop  # this start's event: a resume() after stop() gives the new thread its own

        def beat() -> None:
            while not stop.wait(self.settings.worker_heartbeat):
                self.stop_if_orphaned()
                self.touch_liveness()
                try:
                    self.announce()
                    if stop.is_set() and stop is self._stop:  # stop() retired it during this write (no resume)
                        self.stats.retire_worker(self.name)
                except Exception:
                    log.warning("worker heartbeat failed")

        thread = threading.Thread(target=beat, name="lrpseg-heartbeat", daemon=True)
        self.threads.append(thread)
        self.announce()
        self.touch_liveness()
        thread.start()

    def touch_liveness(self) -> None:
        """The liveness file (LRPSEG_HEARTBEAT_FILE), independent of Redis: a worker that waits
        for Redis to come back is alive, and restarting it would only reload its models."""
        try:
            liveness.touch(self.settings.heartbeat_file)
        except OSError as exc:
            log.warning("could not touch the liveness file: %s", type(exc).__name__)

    def resume(self) -> None:
        """After `stop()` (a worker loop that ended on a Redis error): heartbeat again. A fresh
        event, not the old one cleared: a thread of the last start that was blocked on Redis
        while stop() set its event must still find it set when it comes back, and end."""
        self._stop = threading.Event()
        self.threads = [thread for thread in self.threads if thread.is_alive()]
        self.start_heartbeat()
        self.start_deliveries()

    def start_deliveries(self) -> None:
        """The callback deliverer (workers.deliverer) as a thread of this process, until stop()."""
        from workers import deliverer

        self.threads.append(deliverer.start_thread(self.connection, self.settings, self._stop, self.store))

    def stop_if_orphaned(self) -> None:
        """Under `lrpseg serve`, a worker whose parent died asks itself to stop (warm)."""
        parent = self.settings.parent_pid
        if parent is not None and os.getppid() != parent and not self._stop.is_set():
            log.warning("parent %d is gone; stopping", parent)
            self._stop.set()
            os.kill(os.getpid(), signal.SIGTERM)

    def stop(self) -> None:
        self._stop.set()  # before the retire: a beat in flight sees it after its write (start_heartbeat)
        for thread in self.threads:  # a beat in flight lands before the retire (a bounded wait: Redis may be down)
            if thread.name == "lrpseg-heartbeat" and thread is not threading.current_thread():
                thread.join(timeout=HEARTBEAT_JOIN_S)
        try:
            self.stats.retire_worker(self.name)
        except Exception as exc:
            log.debug("could not retire worker: %s", type(exc).__name__)


_current: WorkerRuntime | None = None


def start(
    settings: Settings | None = None,
    *,
    connection: Redis | None = None,
    registry: Registry | None = None,
    name: str | None = None,
    heartbeat: bool = True,
) -> WorkerRuntime:
    """Build the process's runtime: threads, device, models; then announce it."""
    global _current
    settings = settings or get_settings()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    pin_mmap_threshold()  # large transient tensors in their own mappings (lrpseg.heap)
    runtime = WorkerRuntime(
        settings=settings,
        connection=connection if connection is not None else connect(settings),
        registry=registry or default_registry(),
        device=pick_device(settings.device),
        name=name or settings.worker_name or f"{socket.gethostname()}.{os.getpid()}",
    )
    if settings.deterministic:
        deterministic_kernels(runtime.device)
    if runtime.device.type == "cuda" and runtime.device.index is not None:
        torch.cuda.set_device(runtime.device)  # cuda:K: library handles and stray allocations on GPU K too
    runtime.preload()
    if heartbeat:
        # the deliverer first: its import (pynetdicom, dicomweb-client) takes a while, and the
        # heartbeat's announce is what makes /readyz say this worker is ready
        runtime.start_deliveries()
        runtime.start_heartbeat()
    else:
        runtime.announce()
    _current = runtime
    return runtime


def current() -> WorkerRuntime:
    """The runtime of this process; built from the environment if a plain `rq worker` runs us."""
    return _current if _current is not None else start()


def reset() -> None:
    global _current
    if _current is not None:
        _current.stop()
    _current = None
