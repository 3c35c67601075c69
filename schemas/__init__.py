"""The wire contract of the lrpseg service: pydantic models of requests and responses."""

from schemas.batches import BatchAccepted, BatchItem, BatchState, BatchView, ItemState
from schemas.callbacks import BatchEndedEvent, CallbackState, CallbackStatus, JobEndedEvent
from schemas.health import Check, Health, Readiness
from schemas.jobs import JobAccepted, JobError, JobLinks, JobState, JobView, Progress
from schemas.models import ModelList, ModelOut
from schemas.params import Artifact, Composite, Extractor, JobParams, Method, Target, Task
from schemas.problems import FieldError, Problem
from schemas.results import JobResult

__all__ = [
    "Artifact",
    "BatchAccepted",
    "BatchEndedEvent",
    "BatchItem",
    "BatchState",
    "BatchView",
    "CallbackState",
    "CallbackStatus",
    "Check",
    "Composite",
    "Extractor",
    "FieldError",
    "Health",
    "ItemState",
    "JobAccepted",
    "JobEndedEvent",
    "JobError",
    "JobLinks",
    "JobParams",
    "JobResult",
    "JobState",
    "JobView",
    "Method",
    "ModelList",
    "ModelOut",
    "Problem",
    "Progress",
    "Readiness",
    "Target",
    "Task",
]
