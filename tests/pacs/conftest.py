"""The service fixtures (real Redis, the app, an in-process RQ worker) and the clinical test models."""

from __future__ import annotations

import pytest

from core.settings import DicomRoute, Settings
from lrpseg.registry import Registry
from tests.service import factories
from tests.service.conftest import _clean_db, client, make_client, redis_conn, work  # noqa: F401


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """A 3-D U-Net (the volume model a CT series goes to) and a surface-domain 2-D U-Net."""
    return factories.write_clinical_models(tmp_path_factory.mktemp("clinical"))


@pytest.fixture
def settings() -> Settings:
    return Settings(
        redis_url="redis://unused",
        queue_name="lrpseg-test",
        key_prefix="lrpseg-test",
        device="cpu",
        torch_threads=1,
        job_timeout=60,
        series_quiet_seconds=0.5,
        series_sweep_interval=0.1,
        dicom_routes=[DicomRoute(match={"Modality": "CT"}, model=factories.VOLUME)],
        dimse_allowed_aes=["ORTHANC"],
    )
