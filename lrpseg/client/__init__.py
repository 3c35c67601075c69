"""A Python client for an lrpseg service: `Client` (blocking) and `AsyncClient` (asyncio).

Submit images (paths, bytes or NumPy arrays), wait for their jobs with backoff (honouring
Retry-After on 429/503), and get typed results with the relevance and segmentation as
NumPy arrays. Errors are `ClientError` subclasses; `ServerNotRunning` says where it looked.
"""

from lrpseg.client.aio import AsyncClient
from lrpseg.client.backoff import Backoff
from lrpseg.client.errors import ClientError, JobFailed, ProblemError, RetriesExhausted, ServerNotRunning, WaitTimeout
from lrpseg.client.protocol import DEFAULT_URL
from lrpseg.client.results import Result, Submitted
from lrpseg.client.sync import Client

__all__ = [
    "DEFAULT_URL",
    "AsyncClient",
    "Backoff",
    "Client",
    "ClientError",
    "JobFailed",
    "ProblemError",
    "Result",
    "RetriesExhausted",
    "ServerNotRunning",
    "Submitted",
    "WaitTimeout",
]
