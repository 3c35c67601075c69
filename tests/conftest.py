"""Suite-wide settings: two CPU threads (the CI machine has two cores), seeded RNGs."""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from tests.object_store import S3Server
from tests.orthanc_server import OrthancServer, orthanc_available

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server, started on first use, one per session (tests/object_store.py)."""
    server = S3Server(tmp_path_factory.mktemp("s3"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def orthanc_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """Orthanc with DICOMweb on loopback, started on first use, one per session (tests/orthanc_server.py)."""
    if not orthanc_available():
        pytest.skip("Debian packages orthanc + orthanc-dicomweb not installed (.ci/run installs them)")
    server = OrthancServer(tmp_path_factory.mktemp("orthanc"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def orthanc(orthanc_session: OrthancServer) -> OrthancServer:
    """The session's Orthanc, emptied for this test."""
    orthanc_session.clear()
    return orthanc_session


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket, and the AWS_* environment that points boto3 at it (as a deployment would)."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server.new_bucket()


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Small models on a shared 2-core machine: one thread avoids OpenMP spin contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
