"""A worker process that stops itself (SIGSTOP) right after dequeuing a job, and, once continued,
dies (SIGKILL) as soon as the job has started: the window of issue 15's defect 2.

Run as `python -m tests.workers.paused_worker MARKER` with a worker environment (processes.worker_env);
it writes MARKER once it holds the dequeued job, just before stopping.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from core.settings import Settings
from workers import tasks
from workers.worker import build_worker


def die(*args: Any, **kwargs: Any) -> Any:
    os.kill(os.getpid(), signal.SIGKILL)


def main(marker: Path) -> None:
    worker = build_worker(Settings(), heartbeat=False)
    dequeued = worker.dequeue_job_and_maintain_ttl(timeout=30)
    assert dequeued is not None, "no job to dequeue"
    job, queue = dequeued
    execution = worker.prepare_execution(job)
    marker.write_text(job.id)
    os.kill(os.getpid(), signal.SIGSTOP)  # the parent continues us once the job looks lost
    tasks._run = die  # type: ignore[assignment]  # killed right after the job started
    worker.perform_job(job, queue, execution)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
