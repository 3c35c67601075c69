"""Property-based fuzz of the whole OpenAPI (schemathesis) against the app in-process, real Redis:
no 5xx (but a documented 503: /readyz with no worker here), and every 4xx is problem+json.
Auth on (a valid key) and off; schema-conforming (positive) and schema-violating (negative)
requests; a bounded number of examples per operation.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as settings_
from hypothesis.errors import Unsatisfiable
from hypothesis.strategies import SearchStrategy
from schemathesis.generation import GenerationMode

from core.security import hash_key, new_key
from core.settings import Settings
from schemas.params import JobParams
from tests.service import factories
from tests.service.test_jobs import submit

KEY = new_key()
EXAMPLES = 25  # per operation and mode
FUZZ = settings_(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # no .hypothesis/ folder; every run starts fresh
    derandomize=True,  # the same cases on every run: CI stays reproducible
    suppress_health_check=list(HealthCheck),
)


def fuzz_settings(settings_: Settings, auth: bool) -> Settings:
    extra = {"api_keys": f"fuzz:{hash_key(KEY)}"} if auth else {}
    return Settings.model_validate(
        {**settings_.model_dump(), **extra, "rate_limit": 0, "max_wait": 0.2, "max_upload_bytes": 1 << 20}
    )


def check(case: schemathesis.Case, headers: dict[str, str]) -> None:
    response = case.call(headers=dict(headers))  # call() adds to the dict it is given
    where = f"{case.method} {case.formatted_path} -> {response.status_code}"
    documented_503 = response.status_code == 503 and "503" in case.operation.responses.status_codes
    assert response.status_code < 500 or documented_503, f"{where}\n{response.text[:2000]}\n{case.as_curl_command()}"
    if 400 <= response.status_code < 500:
        content_type = response.headers.get("content-type") or [""]  # schemathesis: name -> list of values
        assert content_type[0].startswith("application/problem+json"), f"{where}: {content_type}"


@pytest.mark.slow
@pytest.mark.parametrize("auth", [True, False], ids=["auth-on", "auth-off"])
def test_no_operation_answers_5xx(
    make_client: Callable[[Settings], TestClient], settings: Settings, auth: bool, work: Callable[[], bool]
) -> None:
    client = make_client(fuzz_settings(settings, auth))
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    headers = {"X-API-Key": KEY} if auth else {}
    png = factories.png_bytes(factories.defect_image(32)[0])
    job_id = submit(client, png, headers=headers).json()["job_id"]  # a real, finished job to aim at too
    assert work()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8  # jobs, explain, artifacts, delete, models, health, metrics, ...
    passes: list[tuple[GenerationMode, dict[str, str]]] = [(GenerationMode.POSITIVE, {})]
    if auth:
        passes.append((GenerationMode.NEGATIVE, {}))
    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        real = [(GenerationMode.POSITIVE, {"job_id": job_id})] if "job_id" in names else []
        for mode, path_parameters in passes + real:

            @FUZZ
            @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
            def fuzz(case: schemathesis.Case) -> None:
                check(case, headers)

            try:
                fuzz()
            except Unsatisfiable:  # nothing to violate: an operation without parameters or body
                assert mode is GenerationMode.NEGATIVE, operation.label


def params_strategy() -> SearchStrategy[dict]:
    """JobParams bodies drawn from the model's own JSON schema (through a one-operation OpenAPI
    document: schemathesis does not read the multipart part's contentSchema)."""
    schema = JobParams.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions = schema.pop("$defs", {})
    body = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobParams"}}}}
    spec = {
        "openapi": "3.1.0",
        "info": {"title": "params", "version": "1"},
        "paths": {"/params": {"post": {"requestBody": {"required": True, **body}, "responses": {"200": {}}}}},
        "components": {"schemas": {**definitions, "JobParams": schema}},
    }
    operation = schemathesis.openapi.from_dict(spec)["/params"]["POST"]
    return operation.as_strategy().map(lambda case: case.body)


@pytest.mark.slow
def test_schema_valid_params_on_a_real_image_never_fail_inside(
    make_client: Callable[[Settings], TestClient], settings: Settings, work: Callable[[], bool]
) -> None:
    """Params the schema allows either get a 422 naming the problem or a job that ends cleanly:
    finished, or failed as bad_input; never a 5xx, never an internal worker error."""
    client = make_client(fuzz_settings(settings, auth=False))
    png = factories.png_bytes(factories.defect_image(32)[0])
    accepted: list[tuple[str, dict]] = []

    @settings_(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(params=params_strategy())
    def fuzz(params: dict) -> None:
        response = submit(client, png, json.dumps(params))
        assert response.status_code in (202, 422), (response.status_code, params, response.text[:1000])
        if response.status_code == 202:
            accepted.append((response.json()["job_id"], params))
        else:
            assert response.json()["errors"], params

    fuzz()
    assert accepted, "no generated params were accepted: the fuzz never reached a worker"
    work()
    for job_id, params in accepted:
        view = client.get(f"/v1/jobs/{job_id}").json()
        assert view["status"] in ("finished", "failed"), (params, view)
        if view["status"] == "failed":
            assert view["error"]["code"] == "bad_input", (params, view["error"])
