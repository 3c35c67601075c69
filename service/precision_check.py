"""params.precision checked at submission against where the jobs would run.

bf16/fp16 run on a CUDA worker only (lrpseg.precision). A service configured for the CPU
(LRPSEG_DEVICE=cpu), or whose live workers all run on the CPU, refuses them with a 422 that
says so, instead of a job that fails in the worker. With no live worker (all starting, or
none yet) the job is accepted: a CPU worker that takes it fails it as bad input.
"""

from __future__ import annotations

from core.settings import Settings
from core.stats import Stats
from lrpseg.inputs import ParamsError
from schemas.params import JobParams, Precision


def check_precision(params: JobParams, settings: Settings, stats: Stats) -> None:
    """ParamsError (422, field params.precision) for bf16/fp16 where no CUDA worker serves them."""
    if params.precision is Precision.fp32:
        return
    wanted = params.precision.value
    if settings.device == "cpu":
        raise ParamsError(
            "params.precision", f"precision {wanted} needs a CUDA worker; this service runs on the CPU (use fp32)"
        )
    devices = {w.device for w in stats.live_workers(settings.worker_max_age)}
    if devices and not any(d.startswith("cuda") for d in devices):
        raise ParamsError(
            "params.precision",
            f"precision {wanted} needs a CUDA worker; the workers run on {', '.join(sorted(devices))} (use fp32)",
        )
