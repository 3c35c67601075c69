"""benchmarks/load.py's accounting: what counts as finished, failed, rejected and lost, and the
percentiles. (A run of the script itself starts Redis, the API and two workers: ~20-60 s on
the 2-core CI machine before the first job, so CI checks the accounting, not a full run.)"""

from __future__ import annotations

import numpy as np

from benchmarks.load import Fault, Record, format_report, report


def test_report_counts_every_accepted_job_once_and_lost_ones_by_id() -> None:
    start = 100.0
    records = [Record(i, submitted_at=start + i, job_id=f"{i:032x}", status="finished") for i in range(10)]
    for i, record in enumerate(records):
        record.ended_at = record.submitted_at + 0.1 * (i + 1)  # latencies 0.1 .. 1.0 s
    records[3].status, records[3].error = "failed", "worker_lost"
    records[4].status = "started"  # never ended before the run stopped: lost
    records[4].ended_at = None
    records.append(Record(10, status="rejected", error="422"))
    records.append(Record(11))  # the deadline came before it was sent
    records[0].throttled = 2

    rep = report(records, start, Fault(killed_pid=42, killed_at=start + 5), retried=1)

    assert rep["jobs"] == 12 and rep["submitted"] == 10
    assert (rep["finished"], rep["failed"], rep["lost"], rep["rejected"], rep["not_submitted"]) == (8, 1, 1, 1, 1)
    assert rep["failed_by_code"] == {"worker_lost": 1}
    assert rep["lost_job_ids"] == [f"{4:032x}"]
    assert rep["throttled_answers"] == 2
    finished = [0.1 * (i + 1) for i in range(10) if i not in (3, 4)]
    for q in (50, 95, 99):
        assert abs(rep["latency_s"][f"p{q}"] - np.percentile(finished, q)) < 1e-3
    assert rep["latency_s"]["max"] == 1.0
    last_end = start + 9 + 1.0
    assert abs(rep["seconds"] - (last_end - start)) < 0.01
    assert abs(rep["throughput_jobs_per_s"] - 8 / (last_end - start)) < 1e-3
    assert rep["killed_at_s"] == 5.0 and rep["requeued_after_the_kill"] == 1

    text = format_report(rep)
    assert "lost 1" in text and "worker 42 SIGKILLed at 5.0 s; 1 job(s) re-queued" in text


def test_report_of_a_run_where_nothing_was_accepted_has_no_figures() -> None:
    rep = report([Record(0, status="rejected", error="503")], 0.0, Fault())
    assert rep["submitted"] == rep["lost"] == 0
    assert rep["latency_s"]["p50"] is None and rep["throughput_jobs_per_s"] is None
    assert "SIGKILL" not in format_report(rep)
