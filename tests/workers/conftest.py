"""The service fixtures (Redis db 13, tiny models, app, in-process worker) serve the worker tests too."""

from tests.service.conftest import (  # noqa: F401 - fixtures
    _clean_db,
    client,
    make_client,
    redis_conn,
    registry,
    settings,
    work,
)
