"""Batches through real HTTP (the app), real Redis and a real RQ worker, on the tiny U-Net.

The central check: every image of a batch gives the same result JSON (minus timings and
URLs) and the same relevance.npy bytes as the same image submitted on its own.
"""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from core import deliveries
from core.settings import Settings
from core.store import Store
from schemas.callbacks import BatchEndedEvent
from service.deps import Principal, get_principal
from tests.service import factories
from tests.service.receiver import running_receiver
from tests.service.test_determinism import comparable
from workers import deliverer as deliver


def image_and_truth(seed: int, size: int = 64) -> tuple[bytes, bytes]:
    image, truth = factories.defect_image(size, seed=seed)
    return factories.png_bytes(image), factories.png_bytes(truth.astype(np.uint8) * 255)


def zip_bytes(members: dict[str, bytes], *, infos: list[tuple[zipfile.ZipInfo, bytes]] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for info, data in infos:
            archive.writestr(info, data)
    return buffer.getvalue()


def post_archive(client: TestClient, data: bytes, params: dict | None = None, **form: str):
    fields = {"params": json.dumps(params or {}), **form}
    return client.post("/v1/batches", files={"archive": ("batch.zip", data, "application/zip")}, data=fields)


def single_result(
    client: TestClient, work: Callable[[], bool], image: bytes, truth: bytes | None
) -> tuple[bytes, bytes]:
    files = {"image": ("x.png", image, "image/png")}
    if truth is not None:
        files["ground_truth"] = ("x.gt.png", truth, "image/png")
    response = client.post("/v1/jobs", files=files, data={"params": "{}"})
    assert response.status_code == 202, response.text
    assert work()  # alone in the queue: a true single run
    view = client.get(response.headers["location"]).json()
    assert view["status"] == "finished"
    npy = client.get(response.headers["location"] + "/artifacts/relevance.npy").content
    return comparable(view["result"]), npy


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Worker batching off (batch_max=1): every job runs alone, as a single submission does.
    With it on, results equal single ones only to rounding (test_worker_batched_...)."""
    return settings.model_copy(update={"batch_max": 1})


def test_batch_results_equal_single_submissions(client: TestClient, work: Callable[[], bool]) -> None:
    inputs = {seed: image_and_truth(seed) for seed in (1, 2, 3)}
    files = [
        ("images", ("a.png", inputs[1][0], "image/png")),
        ("images", ("a.gt.png", inputs[1][1], "image/png")),
        ("images", ("b.png", inputs[2][0], "image/png")),
        ("images", ("c.png", inputs[3][0], "image/png")),
        ("images", ("c.gt.png", inputs[3][1], "image/png")),
    ]
    response = client.post("/v1/batches", files=files, data={"params": "{}"})
    assert response.status_code == 202, response.text
    accepted = response.json()
    location = response.headers["location"]
    assert location == accepted["links"]["self"] and location.endswith(f"/v1/batches/{accepted['batch_id']}")
    assert [(i["index"], i["name"], i["ground_truth"]) for i in accepted["items"]] == [
        (0, "a.png", "a.gt.png"),
        (1, "b.png", None),
        (2, "c.png", "c.gt.png"),
    ]
    queued = client.get(location).json()
    assert queued["status"] == "queued" and queued["counts"] == {"queued": 3} and queued["total"] == 3
    not_yet = client.get(accepted["links"]["archive"])
    assert not_yet.status_code == 409 and "3 of 3 jobs have not ended" in not_yet.json()["detail"]

    assert work()
    view = client.get(location).json()
    assert view["status"] == "finished" and view["counts"] == {"finished": 3}
    for item in view["items"]:  # each item is an ordinary job of this batch
        job = client.get(item["links"]["self"]).json()
        assert job["status"] == "finished" and job["batch_id"] == accepted["batch_id"]

    got = client.get(accepted["links"]["archive"])
    assert got.status_code == 200 and got.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(got.content))
    names = set(archive.namelist())
    assert "batch.json" in names and json.loads(archive.read("batch.json"))["batch_id"] == accepted["batch_id"]
    batch_results = {}
    for folder, seed in (("0000-a", 1), ("0001-b", 2), ("0002-c", 3)):
        result = json.loads(archive.read(f"{folder}/result.json"))
        artifacts = {a["name"] for a in result["artifacts"]}
        assert {f"{folder}/{a}" for a in artifacts} <= names  # every artifact is in the zip
        assert (result.get("ground_truth") is not None) == (seed != 2)
        batch_results[seed] = (comparable(result), archive.read(f"{folder}/relevance.npy"))

    for seed, (image, truth) in inputs.items():
        alone = single_result(client, work, image, None if seed == 2 else truth)
        assert batch_results[seed][0] == alone[0], f"image {seed}: result JSON differs from a single submission"
        assert batch_results[seed][1] == alone[1], f"image {seed}: relevance.npy differs from a single submission"


def test_zip_batch_with_folders_ground_truths_and_tool_junk(client: TestClient, work: Callable[[], bool]) -> None:
    (a, a_gt), (b, _) = image_and_truth(4), image_and_truth(5)
    data = zip_bytes(
        {
            "scans/b.png": b,
            "scans/a.png": a,
            "scans/a.gt.png": a_gt,
            "scans/.DS_Store": b"\0junk",
            "__MACOSX/scans/._a.png": b"\0junk",
        }
    )
    response = post_archive(client, data, {"task": "segment"})
    assert response.status_code == 202, response.text
    items = response.json()["items"]
    assert [(i["name"], i["ground_truth"]) for i in items] == [("scans/a.png", "scans/a.gt.png"), ("scans/b.png", None)]
    assert work()
    archive = zipfile.ZipFile(io.BytesIO(client.get(response.json()["links"]["archive"]).content))
    first = json.loads(archive.read("0000-a/result.json"))
    assert first.get("ground_truth") is not None and "0001-b/segmentation.png" in archive.namelist()


def test_one_bad_image_rejects_the_batch_naming_it_and_enqueues_nothing(
    client: TestClient, redis_conn: redis.Redis
) -> None:
    good, _ = image_and_truth(1)
    files = [
        ("images", ("ok.png", good, "image/png")),
        ("images", ("broken.png", b"\x89PNG\r\n\x1a\nnot really", "image/png")),
        ("images", ("ok2.png", good, "image/png")),
    ]
    response = client.post("/v1/batches", files=files)
    assert response.status_code in (400, 415, 422), response.text
    problem = response.json()
    assert "images[1] (broken.png)" in problem["detail"] and problem["errors"][0]["field"].startswith("images[1]")
    assert client.app.state.queue.count == 0
    assert not redis_conn.keys("lrpseg-test:record:*") and not redis_conn.keys("lrpseg-test:input:*")

    tiny, _ = factories.defect_image(16)  # decodes, but a region outside it: a params error for image 0
    params = {"target": {"kind": "region", "region": [{"x0": 30, "y0": 30, "x1": 40, "y1": 40}]}}
    response = post_archive(client, zip_bytes({"x.png": factories.png_bytes(tiny)}), params)
    assert response.status_code == 422 and "images[0] (x.png)" in response.json()["detail"]
    assert client.app.state.queue.count == 0


@pytest.mark.parametrize(
    ("members", "infos", "status", "message"),
    [
        ({}, "symlink", 422, "is a symbolic link"),
        ({"../up.png": b"x"}, None, 422, "not a plain relative path"),
        ({"/abs.png": b"x"}, None, 422, "not a plain relative path"),
        ({"a/./b.png": b"x"}, None, 422, "not a plain relative path"),
        ({}, "encrypted", 422, "is encrypted"),
        ({f"m{i}.png": b"x" for i in range(9)}, None, 413, "9 entries; the limit is 8"),
        ({"bomb.png": bytes(3 * 1024 * 1024)}, None, 413, "the limit is 2097152"),
        ({"a.gt.png": b"x", "b.png": b"x"}, None, 422, "has no image named a.*"),
        ({"only.gt.png": b"x"}, None, 422, "no images"),
    ],
)
def test_unsafe_or_invalid_archives_are_rejected_before_reading(
    make_client: Callable[[Settings], TestClient],
    settings: Settings,
    members: dict[str, bytes],
    infos: str | None,
    status: int,
    message: str,
) -> None:
    client = make_client(settings.model_copy(update={"max_archive_members": 8, "max_archive_bytes": 2 * 1024 * 1024}))
    extra = []
    if infos == "symlink":
        link = zipfile.ZipInfo("link.png")
        link.create_system = 3
        link.external_attr = 0o120777 << 16
        extra.append((link, b"/etc/passwd"))
    data = zip_bytes(members or {"locked.png": b"x"} if infos == "encrypted" else members, infos=extra)
    if infos == "encrypted":  # zipfile cannot write encrypted members: set the flag in the directory
        at = data.index(b"PK\x01\x02") + 8
        data = data[:at] + bytes([data[at] | 0x1]) + data[at + 1 :]
    response = post_archive(client, data)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert message in response.json()["detail"]
    assert client.app.state.queue.count == 0


def test_a_zip_bomb_costs_only_its_directory(make_client: Callable[[Settings], TestClient], settings: Settings) -> None:
    bomb = zip_bytes({f"layer{i}.png": bytes(40 * 1024 * 1024) for i in range(4)})  # 160 MiB of zeros
    assert len(bomb) < 1024 * 1024
    client = make_client(settings.model_copy(update={"max_archive_bytes": 64 * 1024 * 1024}))
    started = time.perf_counter()
    response = post_archive(client, bomb)
    assert response.status_code == 413 and "167772160 bytes uncompressed" in response.json()["detail"]
    assert time.perf_counter() - started < 2.0  # nothing was inflated


def test_batch_limits_and_request_shape(make_client: Callable[[Settings], TestClient], settings: Settings) -> None:
    client = make_client(settings.model_copy(update={"max_batch_images": 2}))
    image, _ = image_and_truth(1)
    three = [("images", (f"{n}.png", image, "image/png")) for n in "abc"]
    response = client.post("/v1/batches", files=three)
    assert response.status_code == 413 and "3 images; the limit is 2" in response.json()["detail"]
    assert client.post("/v1/batches", data={"params": "{}"}).status_code == 422  # neither images nor archive
    both = [three[0], ("archive", ("b.zip", zip_bytes({"x.png": image}), "application/zip"))]
    assert client.post("/v1/batches", files=both).status_code == 422
    not_zip = client.post("/v1/batches", files={"archive": ("b.zip", b"PK\x03\x04 nope", "application/zip")})
    assert not_zip.status_code == 400 and "not a readable zip" in not_zip.json()["detail"]
    bad_params = client.post("/v1/batches", files=three[:1], data={"params": '{"masks": ["nope"]}'})
    assert bad_params.status_code == 422 and bad_params.json()["errors"][0]["field"].startswith("params.masks")


def test_a_failed_job_makes_the_batch_partial_and_its_error_is_in_the_archive(
    client: TestClient, work: Callable[[], bool], redis_conn: redis.Redis
) -> None:
    image, _ = image_and_truth(1)
    files = [("images", (f"{n}.png", image, "image/png")) for n in "ab"]
    accepted = client.post("/v1/batches", files=files, data={"params": '{"task": "segment"}'}).json()
    Store(redis_conn, "lrpseg-test").delete_inputs(accepted["items"][1]["job_id"])  # job b will fail
    work()
    view = client.get(accepted["links"]["self"]).json()
    assert view["status"] == "partial" and view["counts"] == {"finished": 1, "failed": 1}
    assert view["items"][1]["error"]["code"] == "inputs_missing"
    archive = zipfile.ZipFile(io.BytesIO(client.get(accepted["links"]["archive"]).content))
    assert json.loads(archive.read("0001-b/error.json"))["code"] == "inputs_missing"
    assert "0000-a/result.json" in archive.namelist()


def test_batches_belong_to_their_principal_and_delete_and_expire(
    make_client: Callable[[Settings], TestClient], settings: Settings, work: Callable[[], bool]
) -> None:
    client = make_client(settings)
    image, _ = image_and_truth(1)
    files = [("images", (f"{n}.png", image, "image/png")) for n in "ab"]
    accepted = client.post("/v1/batches", files=files, data={"params": '{"task": "segment"}'}).json()
    location = accepted["links"]["self"]

    client.app.dependency_overrides[get_principal] = lambda: Principal("someone-else")
    assert client.get(location).status_code == 404
    assert client.get(accepted["links"]["archive"]).status_code == 404
    assert client.delete(location).status_code == 404
    del client.app.dependency_overrides[get_principal]
    assert client.get("/v1/batches/not-an-id").status_code == 404

    assert client.delete(location).status_code == 204
    assert client.get(location).status_code == 410
    tombstone = client.app.state.redis.hgetall(f"{settings.key_prefix}:batch:{accepted['batch_id']}")
    assert tombstone and not any(b"a.png" in v or b"b.png" in v for v in tombstone.values())  # no file names
    for item in accepted["items"]:
        assert client.get(item["links"]["self"]).status_code == 410  # its jobs went with it
    assert client.app.state.queue.count == 0

    short = make_client(settings.model_copy(update={"result_ttl": 1, "failure_ttl": 1}))
    later = short.post("/v1/batches", files=files[:1], data={"params": '{"task": "segment"}'}).json()
    time.sleep(1.1)
    gone = short.get(later["links"]["self"])
    assert gone.status_code == 410 and "expired" in gone.json()["detail"]


def post_three_with_callback(client: TestClient, seed: int, url: str) -> dict[str, Any]:
    """A batch of three equal segment jobs calling back to `url`; the 202 body."""
    image, _ = image_and_truth(seed)
    files = [("images", (f"{n}.png", image, "image/png")) for n in "abc"]
    response = client.post("/v1/batches", files=files, data={"params": '{"task": "segment"}', "callback_url": url})
    assert response.status_code == 202, response.text
    return response.json()


def test_batch_callback_fires_once_when_every_job_ended(
    make_client: Callable[[Settings], TestClient], settings: Settings, redis_conn: redis.Redis, registry: Any
) -> None:
    """With worker batching on: the jobs share a pass but each still ends (and is hooked) on its own."""
    from workers.worker import build_worker

    secret = "batch-secret"
    settings = settings.model_copy(
        update={
            "callback_allowed_hosts": ["127.0.0.1"],
            "callback_secret": SecretStr(secret),
            "callback_poll": 0.05,
            "callback_timeout": 1.0,
            "batch_max": 8,
        }
    )

    def work() -> None:
        build_worker(settings, connection=redis_conn, registry=registry, heartbeat=False).work(
            burst=True, logging_level="WARNING"
        )

    client = make_client(settings)
    with running_receiver([200]) as receiver:
        accepted = post_three_with_callback(client, 1, receiver.url)
        Store(redis_conn, settings.key_prefix).delete_inputs(accepted["items"][2]["job_id"])
        assert client.get(accepted["links"]["self"]).json()["callback"]["status"] == "pending"
        work()
        stop = threading.Event()
        thread = deliver.start_thread(redis_conn, settings, stop)
        try:
            got = receiver.wait_for(1, timeout=10)
            time.sleep(0.3)  # a second (per-job or duplicate) callback would arrive by now
        finally:
            stop.set()
            thread.join(timeout=10)
        assert len(receiver.requests) == 1
    request = got[0]
    assert deliveries.verify(
        secret, request.headers["x-lrpseg-timestamp"], request.body, request.headers["x-lrpseg-signature"]
    )
    body: dict[str, Any] = json.loads(request.body)
    assert body["event"] == "batch.ended" and body["batch_id"] == accepted["batch_id"]
    assert body["status"] == "partial" and body["counts"] == {"finished": 2, "failed": 1} and body["total"] == 3
    assert body["links"] == accepted["links"]
    assert BatchEndedEvent.model_validate(body).model_dump(mode="json") == body  # the documented schema, exactly
    view = client.get(accepted["links"]["self"]).json()
    assert view["callback"]["status"] == "delivered" and view["callback"]["attempts"] == 1
    assert view["status"] == "partial"
    finished = [client.get(i["links"]["self"]).json() for i in view["items"][:2]]
    assert [j["result"]["timings"]["batch_size"] for j in finished] == [2, 2]  # they did share a pass


@pytest.mark.parametrize("deleted", ["queued", "started"])
def test_a_deleted_job_still_lets_the_batch_end_and_call_back_once(
    make_client: Callable[[Settings], TestClient],
    settings: Settings,
    redis_conn: redis.Redis,
    registry: Any,
    deleted: str,
) -> None:
    """DELETE of a queued job runs no RQ hook: the delete itself counts it as ended for the batch.
    A started one is marked deleted and ended by its worker: its hook counts it (no job callback)."""
    from workers.worker import build_worker

    secret = "batch-secret"
    settings = settings.model_copy(
        update={
            "callback_allowed_hosts": ["127.0.0.1"],
            "callback_secret": SecretStr(secret),
            "callback_poll": 0.05,
            "callback_timeout": 1.0,
        }
    )
    client = make_client(settings)
    with running_receiver([200]) as receiver:
        accepted = post_three_with_callback(client, 2, receiver.url)
        if deleted == "queued":
            assert client.delete(accepted["items"][1]["links"]["self"]).status_code == 204
        else:  # what DELETE does to a started job: the tombstone, which its worker then sees
            Store(redis_conn, settings.key_prefix).mark_deleted(accepted["items"][1]["job_id"])
        build_worker(settings, connection=redis_conn, registry=registry, heartbeat=False).work(
            burst=True, logging_level="WARNING"
        )
        stop = threading.Event()
        thread = deliver.start_thread(redis_conn, settings, stop)
        try:
            got = receiver.wait_for(1, timeout=10)
            time.sleep(0.3)  # a second callback would arrive by now
        finally:
            stop.set()
            thread.join(timeout=10)
        assert len(receiver.requests) == 1
    body: dict[str, Any] = json.loads(got[0].body)
    assert body["event"] == "batch.ended" and body["batch_id"] == accepted["batch_id"]
    assert body["status"] == "partial" and body["total"] == 3
    assert body["counts"] == {"finished": 2, "failed": 0, "deleted": 1}
    view = client.get(accepted["links"]["self"]).json()
    assert view["status"] == "partial" and view["counts"] == {"finished": 2, "deleted": 1}
    assert view["callback"]["status"] == "delivered" and view["callback"]["attempts"] == 1


def close(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two result JSONs differ beyond float rounding (sizes of compressed PNGs aside)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a if k != "bytes" for d in close(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: lengths {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in close(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float):
        return [] if abs(a - b) <= 1e-4 * max(abs(a), abs(b)) + 1e-9 else [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_worker_batched_batch_results_match_single_ones_to_rounding(
    make_client: Callable[[Settings], TestClient], settings: Settings, redis_conn: redis.Redis, registry: Any
) -> None:
    """With worker batching on (batch_max > 1), a batch's equal-shaped images share one
    forward + LRP pass: CPU kernels round differently for N > 1, so results equal single runs
    to ~1e-6 of max |R|, not byte for byte (docs/interop.md)."""
    from workers.worker import build_worker

    batching = settings.model_copy(update={"batch_max": 8})
    client = make_client(batching)

    def work() -> None:
        build_worker(batching, connection=redis_conn, registry=registry, heartbeat=False).work(
            burst=True, logging_level="WARNING"
        )

    inputs = [image_and_truth(seed) for seed in (1, 2, 3)]
    files = [("images", (f"{n}.png", image, "image/png")) for n, (image, _) in zip("abc", inputs, strict=True)]
    accepted = client.post("/v1/batches", files=files, data={"params": "{}"}).json()
    work()
    for item, (image, _) in zip(accepted["items"], inputs, strict=True):
        job = client.get(item["links"]["self"]).json()
        assert job["status"] == "finished" and job["result"]["timings"]["batch_size"] == 3
        batched = json.loads(comparable(job["result"]))
        batched_npy = np.load(io.BytesIO(client.get(item["links"]["self"] + "/artifacts/relevance.npy").content))
        alone_json, alone_npy_bytes = single_result(client, work_and_true(work), image, None)
        alone_npy = np.load(io.BytesIO(alone_npy_bytes))
        assert close(batched, json.loads(alone_json)) == []
        scale = float(np.abs(alone_npy).max())
        assert scale > 0 and float(np.abs(batched_npy - alone_npy).max()) <= 1e-5 * scale


def work_and_true(work: Callable[[], None]) -> Callable[[], bool]:
    def run() -> bool:
        work()
        return True

    return run
