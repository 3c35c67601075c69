"""The service fixtures (real Redis, the app, an in-process RQ worker) and the clinical test models."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from core.security import hash_key
from core.settings import Settings
from lrpseg.registry import Registry
from service.app import create_app
from tests.pacs.factories import intake_settings
from tests.pacs.round_trip import KEY
from tests.service import factories
from tests.service.conftest import _clean_db, client, make_client, redis_conn, work  # noqa: F401
from tests.service.live import start_server


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """A 3-D U-Net (the volume model a CT series goes to) and a surface-domain 2-D U-Net."""
    return factories.write_clinical_models(tmp_path_factory.mktemp("clinical"))


@pytest.fixture
def settings() -> Settings:
    return intake_settings(dimse_allowed_aes=["ORTHANC"])


@pytest.fixture
def hospital(settings: Settings) -> Settings:
    """Keys on: Orthanc's DICOMweb peer carries the key; its calling AE maps to the same key."""
    return settings.model_copy(
        update={"api_keys": f"hospital:{hash_key(KEY)}", "dimse_allowed_aes": ["ORTHANC=hospital"]}
    )


@pytest.fixture
def lrpseg_url(redis_conn: redis.Redis, registry: Registry, hospital: Settings) -> Iterator[str]:  # noqa: F811
    """The app served on a loopback port (Orthanc must reach it over HTTP), with the sweeper running."""
    url, stop = start_server(create_app(hospital, registry=registry, connection=redis_conn))
    yield url
    stop()
