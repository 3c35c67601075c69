"""A series end to end through a real Orthanc, as a hospital runs it: the SEG back in Orthanc.

    .venv/bin/python benchmarks/pacs.py [--mode push|pull] [--way stow|c-store] [--slices 64]
        [--size 64] [--repeats 3] [--warmup 1] [--threads 2] [--model unet-defects@1] [--modality OT] [--quiet S]

push (default): the series is stored in Orthanc, Orthanc sends it to lrpseg (its DICOMweb peer,
STOW-RS to `POST /dicomweb/studies`; or `--way c-store` to the `lrpseg dimse` SCP), the series is
committed (`POST /dicomweb/series/{uid}/commit`; or `--quiet S`: its quiet period of S s ends it) and
routed on Modality to the model, one job explains it, and the deliverer sends the SEG and the
relevance Parametric Map back to the same Orthanc the way the series came (STOW-RS or C-STORE).
pull: the job names the series (`params.source.dicomweb`), the worker fetches it by WADO-RS, and the
results go back by STOW-RS.

Needs Debian's `orthanc` + `orthanc-dicomweb` (as the tests). Everything runs here: Orthanc on
loopback, embedded Redis, the app served by uvicorn (Orthanc talks HTTP to it) with API keys on,
the SCP, one burst RQ worker per run, and the deliverer thread a worker runs. The clock starts when
Orthanc is asked to send (push) or the job is submitted (pull), and stops when the job view says the
delivery is `delivered` (the SEG is in Orthanc, checked after). Split: send (Orthanc -> lrpseg),
quiet/commit (-> the job exists), job (a burst worker: its start with the model's load and
warm-up pass, then the job; in brackets the job's own stages), delivery (worker done -> delivered). Medians of the repeats, after `--warmup` runs that are
not counted (the process's first job pays imports and the model's load; a worker is long-lived).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import redis
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.*
from core.security import hash_key
from core.settings import DicomRoute, Settings
from lrpseg.registry import Registry
from lrpseg.registry.catalog import DEFAULT_MODEL, SHIPPED_DIR
from pacs.intake import SeriesIntake
from pacs.receive import Receiver
from pacs.scp import start as start_scp
from service.app import create_app
from service.embedded import start_embedded
from tests.orthanc_server import OrthancServer, orthanc_available
from tests.pacs import round_trip
from tests.service.factories import write_clinical_models
from tests.service.live import start_server
from tests.service.pacs_series import make_series
from workers.worker import build_worker

PUSH, PULL = "push", "pull"
STEPS = ("total_s", "send_s", "commit_s", "job_s", "deliver_s", "decode_s", "pass_s", "in_job_s")


def settings_for(args: argparse.Namespace, redis_url: str, orthanc: OrthancServer) -> Settings:
    """Keys on, the series routed on Modality, the results sent back the way the series came."""
    by_c_store = args.mode == PUSH and args.way == round_trip.C_STORE
    return Settings(
        redis_url=redis_url,
        device="cpu",
        torch_threads=args.threads,
        preload="default",  # a worker starts by loading (and warming up) the model, not every model here
        log_level="warning",
        api_keys=f"hospital:{hash_key(round_trip.KEY)}",
        dimse_allowed_aes=["ORTHANC=hospital"],
        dicom_routes=[DicomRoute(match={"Modality": args.modality}, model=args.model)],
        series_quiet_seconds=args.quiet or 3600.0,  # without --quiet the series is committed explicitly
        series_sweep_interval=0.05,
        dicomweb_allowed_hosts=["127.0.0.1"],
        callback_poll=0.02,
        dicomweb_destination=None if by_c_store else orthanc.dicomweb_url,
        dimse_destination=f"ORTHANC@127.0.0.1:{orthanc.dicom_port}" if by_c_store else None,
    )


def run_once(
    args: argparse.Namespace,
    url: str,
    settings: Settings,
    connection: redis.Redis,
    registry: Registry,
    orthanc: OrthancServer,
    seed: int,
) -> dict[str, float]:
    orthanc.clear()
    source = make_series(args.slices, args.size, modality=args.modality, seed=seed)
    series_uid = str(source[0].SeriesInstanceUID)
    study = round_trip.store_in(orthanc, source)
    headers = round_trip.HEADERS
    start = time.perf_counter()
    if args.mode == PUSH:
        round_trip.send(orthanc, args.way, study)
        sent = time.perf_counter()
        if args.quiet:
            job_id = round_trip.job_of(url, series_uid, headers)
        else:
            job_id = round_trip.commit(url, series_uid, headers)
    else:
        sent = start
        reference = {"url": orthanc.dicomweb_url, "study": str(source[0].StudyInstanceUID), "series": series_uid}
        answer = httpx.post(
            f"{url}/v1/jobs",
            data={"params": json.dumps({"model": args.model, "source": {"dicomweb": reference}})},
            headers=headers,
            timeout=30,
        )
        assert answer.status_code == 202, answer.text
        job_id = str(answer.json()["job_id"])
    queued = time.perf_counter()
    worker = build_worker(settings, connection=connection, registry=registry, name=None, heartbeat=False)
    assert worker.work(burst=True, logging_level="WARNING")
    worked = time.perf_counter()
    view = round_trip.delivered(url, job_id, headers)
    end = time.perf_counter()
    assert view["status"] == "finished", view
    assert [d["status"] for d in view["deliveries"]] == ["delivered"], view["deliveries"]
    found = round_trip.series_in_study(orthanc, study)
    assert len(found) == 3 and len(found[series_uid]) == args.slices, found  # the source, one SEG, one map
    timings = view["result"]["timings"]
    return {
        "total_s": end - start,
        "send_s": sent - start,
        "commit_s": queued - sent,
        "job_s": worked - queued,
        "deliver_s": end - worked,
        "decode_s": timings["decode"] / 1000,  # pull: with the WADO-RS fetch
        "pass_s": (timings["forward"] + timings["lrp"]) / 1000,
        "in_job_s": timings["total"] / 1000,
    }


def measure(args: argparse.Namespace, work: Path, report: Callable[[str], None] = print) -> dict[str, float]:
    """Starts Orthanc, Redis, the app (and the SCP), runs the repeats; the medians."""
    clinical = write_clinical_models(work / "models")
    registry = Registry([SHIPPED_DIR, *clinical.dirs], default=args.model)
    orthanc = OrthancServer(work / "orthanc")
    orthanc.start()
    embedded = start_embedded(work / "redis")
    connection: redis.Redis = embedded.server
    settings = settings_for(args, embedded.url, orthanc)
    url, stop_app = start_server(create_app(settings, registry=registry, connection=connection))
    scp = start_scp(settings, Receiver(SeriesIntake(connection, settings)), port=0)
    load_before = os.getloadavg()[0]
    try:
        round_trip.connect(orthanc, args.way, url, round_trip.HEADERS, settings.dimse_ae_title, scp.server_address[1])
        with round_trip.deliverer(connection, settings):
            runs = [run_once(args, url, settings, connection, registry, orthanc, seed) for seed in range(args.repeats)]
    finally:
        scp.shutdown()
        stop_app()
        embedded.stop()
        orthanc.stop()
    med = {k: statistics.median(r[k] for r in runs) for k in STEPS}
    how = (
        f"push by {args.way}" + (f", quiet {args.quiet} s" if args.quiet else ", commit")
        if args.mode == PUSH
        else "pull by WADO-RS"
    )
    report(
        f"{args.slices} slices of {args.size}x{args.size} {args.modality}, {args.model}, {how}, "
        f"{args.threads} torch threads, {args.repeats} repeats after {args.warmup} warm-up, "
        f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    report(
        "| mode | slices | total s | slices/s | send s | quiet/commit s "
        "| job s (in the job: decode, forward + LRP, all) | delivery s |"
    )
    report("| --- | --- | --- | --- | --- | --- | --- | --- |")
    report(
        f"| {args.mode} | {args.slices} | {med['total_s']:.2f} | {args.slices / med['total_s']:.1f} | "
        f"{med['send_s']:.2f} | {med['commit_s']:.2f} | {med['job_s']:.2f} "
        f"({med['decode_s']:.2f}, {med['pass_s']:.2f}, {med['in_job_s']:.2f}) | "
        f"{med['deliver_s']:.2f} |"
    )
    return med


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=(PUSH, PULL), default=PUSH)
    parser.add_argument("--way", choices=(round_trip.STOW, round_trip.C_STORE), default=round_trip.STOW)
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="runs first, not counted (imports, model load)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--modality", default="OT", help="the series' Modality, routed to --model")
    parser.add_argument("--quiet", type=float, default=0.0, help="end the series by a quiet period of S s, not commit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if not orthanc_available():
        print("needs Debian's orthanc + orthanc-dicomweb", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    measure(args, Path(tempfile.mkdtemp(prefix="lrpseg-pacs-")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
