"""What a queued job carries, declared once: the task and hook names RQ resolves, and the job.meta keys.

The API writes the meta at enqueue (service.submission); the worker updates progress and
errors (workers.progress), recovery marks lost jobs (core.recovery), the job-end hook
(core.job_end) and the views (service.views) read it. Every one of them uses these names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# dotted names RQ imports in the process that runs them (so they must not move silently)
TASK = "workers.tasks.process_job"  # runs a job, in a worker
ON_SUCCESS = "core.job_end.on_job_success"  # job-end hooks: a worker, or the API reaping a lost job
ON_FAILURE = "core.job_end.on_job_failure"

# job.meta keys
REQUEST_ID = "request_id"  # the submitting request's X-Request-ID (log correlation)
OWNER = "owner"  # the principal that submitted it
MODEL = "model"  # model id
STAGE = "stage"  # progress: queued, decode, forward, ..., failed, requeued
FRACTION = "fraction"  # progress within the job, 0..1
BATCH_KEY = "batch_key"  # lrpseg.pipeline.batch_key: equal keys may run as one forward batch
BATCH_SIZE = "batch_size"  # how many jobs ran in the worker batch this one was part of
BATCH_ID = "batch_id"  # the POST /v1/batches this job belongs to
CALLBACK = "callback"  # {url, delivery_id, job_url}: the job's completion callback
HOOKS = "hooks"  # {prefix, ttl}: set when the end hooks must run (callback or batch callback)
ERROR = "error"  # {code, detail}: why the job failed

DEFAULT_HOOK_TTL = 86400


def meta_of(job: Any) -> dict[str, Any]:
    """A job's meta as a dict (RQ leaves it None or {} on some paths)."""
    meta = getattr(job, "meta", None)
    return meta if isinstance(meta, dict) else {}


def hook_settings(meta: Mapping[str, Any]) -> tuple[str, int] | None:
    """(key prefix, ttl) the end hooks write with, or None when the job has no end hooks."""
    hooks = meta.get(HOOKS) or {}
    if not hooks:
        return None
    return str(hooks.get("prefix", "lrpseg")), int(hooks.get("ttl", DEFAULT_HOOK_TTL))
