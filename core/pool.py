"""Supervised worker processes: `lrpseg serve`'s workers and `lrpseg worker --workers N`.

Each worker is a fresh interpreter (`python -m launch worker`: no fork, CUDA-safe) with its own
device (one per GPU) and, with LRPSEG_HEARTBEAT_FILE, its own liveness file.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from core import liveness
from core.settings import Settings

log = logging.getLogger("lrpseg.pool")
GRACE_SECONDS = 15.0  # the default of Settings.shutdown_grace


def worker_env(settings: Settings, redis_url: str | None, device: str | None = None, slot: int = 0) -> dict[str, str]:
    """The environment of one worker: this one's, plus its Redis (a URL; Sentinel settings are
    inherited), device, queue and, under a pool, its own liveness file."""
    env = dict(os.environ)
    if settings.heartbeat_file is not None:  # each worker its own; the pool's file sums them up
        env["LRPSEG_HEARTBEAT_FILE"] = str(slot_heartbeat_file(settings.heartbeat_file, slot))
    if redis_url:
        env["LRPSEG_REDIS_URL"] = redis_url
    env.update(
        {
            "LRPSEG_DEVICE": device or settings.device,
            "LRPSEG_PARENT_PID": str(os.getpid()),
            "LRPSEG_QUEUE_NAME": settings.queue_name,
            "LRPSEG_KEY_PREFIX": settings.key_prefix,
        }
    )
    env["LRPSEG_TORCH_THREADS"] = str(settings.torch_threads or threads_per_worker(settings.workers))
    return env


def threads_per_worker(workers: int) -> int:
    """Share the cores: oversubscribed OpenMP threads spin and can be 10-100x slower."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def worker_devices(device: str, workers: int, gpus: int) -> list[str]:
    """The device of each worker slot: one worker per GPU. With `cuda` (or `auto` on a machine
    with GPUs) slot i gets cuda:(i mod gpus), so `--workers` = the number of GPUs puts one worker
    on each and more workers share them round-robin; `cuda:K` pins every worker to GPU K;
    `cpu`, and `auto` without a GPU, leave the choice as it is."""
    if device in ("cuda", "auto") and gpus > 0:
        return [f"cuda:{slot % gpus}" for slot in range(workers)]
    return [device] * workers


def gpu_count() -> int:
    """GPUs this process sees (CUDA_VISIBLE_DEVICES applies); 0 without CUDA."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def slot_heartbeat_file(path: Path, slot: int) -> Path:
    return path.with_name(f"{path.name}.{slot}")


def start_worker(settings: Settings, redis_url: str | None, device: str, slot: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "launch", "worker"]
    # Own session: Ctrl-C reaches only us, and we stop them in order (warm, then hard).
    return subprocess.Popen(command, env=worker_env(settings, redis_url, device, slot), start_new_session=True)


def start_workers(settings: Settings, redis_url: str | None, devices: list[str]) -> list[subprocess.Popen[bytes]]:
    return [start_worker(settings, redis_url, device, slot) for slot, device in enumerate(devices)]


def stop_workers(procs: list[subprocess.Popen[bytes]], grace: float = GRACE_SECONDS) -> None:
    """SIGTERM: each worker finishes its job (RQ's warm stop); after `grace` s, SIGKILL. A job
    killed that way is re-queued (or failed as worker_lost) once its claim lapses."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class WorkerPool:
    """The worker processes of `lrpseg serve`, supervised: one that exits while the service runs
    (SIGKILL, the kernel's OOM killer, a crash) is started again, at most once every
    `RESTART_BACKOFF` s per slot so a worker that cannot start does not spin. Its job, if it had
    one, is re-queued once its claim lapses (docs/operations.md).

    With LRPSEG_HEARTBEAT_FILE set, each worker beats into its own file (`<file>.<slot>`) and the
    pool touches `<file>` while every one of them is fresh: `lrpseg worker --check` on the pool's
    file fails once a worker stays dead or frozen (a container probe then restarts the lot)."""

    RESTART_BACKOFF = 5.0

    def __init__(self, settings: Settings, redis_url: str | None, gpus: int | None = None) -> None:
        gpus = gpu_count() if gpus is None else gpus
        self.settings = settings
        self.devices = worker_devices(settings.device, settings.workers, gpus)
        self.procs = start_workers(settings, redis_url, self.devices)
        self._redis_url = redis_url
        self._earliest = [0.0] * len(self.procs)
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="lrpseg-workers", daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        while not self._stopping.wait(1.0):
            for slot, proc in enumerate(self.procs):
                if proc.poll() is None or time.monotonic() < self._earliest[slot] or self._stopping.is_set():
                    continue
                log.warning("worker pid %d exited (%s); starting another", proc.pid, proc.returncode)
                self.procs[slot] = self._spawn(slot)
                self._earliest[slot] = time.monotonic() + self.RESTART_BACKOFF
            self._touch_if_all_alive()

    def _spawn(self, slot: int) -> subprocess.Popen[bytes]:
        return start_worker(self.settings, self._redis_url, self.devices[slot], slot)  # same device again

    def _touch_if_all_alive(self) -> None:
        path = self.settings.heartbeat_file
        if path is None:
            return
        max_age = self.settings.worker_max_age
        slots = (slot_heartbeat_file(path, slot) for slot in range(len(self.procs)))
        if all(liveness.check(slot_file, max_age) is None for slot_file in slots):
            try:
                liveness.touch(path)
            except OSError as exc:
                log.warning("could not touch the liveness file: %s", type(exc).__name__)

    def stop(self, grace: float) -> None:
        self._stopping.set()
        self._watcher.join()
        stop_workers(self.procs, grace)
