"""The service fixtures (test Redis, tiny models, settings) serve the core tests too."""

from tests.service.conftest import (  # noqa: F401 - fixtures
    _clean_db,
    make_client,
    redis_conn,
    registry,
    settings,
)
