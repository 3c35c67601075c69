"""The worker runtime: models loaded once (broken ones reported), device choice, announcements."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
import redis
import torch

from core.settings import Settings
from core.stats import Stats
from lrpseg.registry import Registry
from tests.service import factories
from workers import runtime


def test_device_choice() -> None:
    assert runtime.pick_device("cpu").type == "cpu"
    assert runtime.pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            runtime.pick_device("cuda:0")


def test_models_are_loaded_once_and_announced(settings: Settings, redis_conn: redis.Redis, registry: Registry) -> None:
    rt = runtime.start(settings, connection=redis_conn, registry=registry, name="w-test", heartbeat=False)
    assert sorted(rt.loaded) == [factories.SEGMENTER, factories.CLASSIFIER] and not rt.errors
    assert runtime.current() is rt
    info, model = rt.model("tiny-unet")
    assert info.id == factories.SEGMENTER and model is registry.load(factories.SEGMENTER)
    (seen,) = Stats(redis_conn, settings.key_prefix).live_workers(max_age=60)
    assert seen.name == "w-test" and seen.device == "cpu" and sorted(seen.models) == sorted(rt.loaded)
    runtime.reset()
    assert Stats(redis_conn, settings.key_prefix).live_workers(max_age=60) == []


def test_a_model_that_fails_to_load_is_reported_not_fatal(
    settings: Settings, redis_conn: redis.Redis, registry: Registry, tmp_path: Path
) -> None:
    folder = tmp_path / "models"
    shutil.copytree(registry.get(factories.SEGMENTER).path, folder / factories.SEGMENTER)
    broken = folder / "broken@1"
    shutil.copytree(registry.get(factories.SEGMENTER).path, broken)
    config = json.loads((broken / "config.json").read_text())
    config.update(name="broken", architecture={**config["architecture"], "base_width": 8})  # weights do not fit
    (broken / "config.json").write_text(json.dumps(config))
    rt = runtime.start(
        settings,
        connection=redis_conn,
        registry=Registry([folder], default=factories.SEGMENTER),
        name="w-broken",
        heartbeat=False,
    )
    assert rt.loaded == [factories.SEGMENTER] and list(rt.errors) == ["broken@1"]
    (seen,) = Stats(redis_conn, settings.key_prefix).live_workers(max_age=60)
    assert seen.errors == {"broken@1": rt.errors["broken@1"]}


def test_a_worker_whose_parent_died_asks_itself_to_stop(
    settings: Settings, redis_conn: redis.Redis, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    orphan = settings.model_copy(update={"parent_pid": 1 if runtime.os.getppid() != 1 else 2, "preload": "default"})
    rt = runtime.start(orphan, connection=redis_conn, registry=registry, name="w-orphan", heartbeat=False)
    signals: list[tuple[int, int]] = []
    monkeypatch.setattr(runtime.os, "kill", lambda pid, sig: signals.append((pid, sig)))
    rt.stop_if_orphaned()
    rt.stop_if_orphaned()  # once is enough
    assert signals == [(runtime.os.getpid(), runtime.signal.SIGTERM)]


def hold_the_next_beat(
    rt: runtime.WorkerRuntime, heartbeat: threading.Thread, monkeypatch: pytest.MonkeyPatch
) -> threading.Event:
    """Holds `heartbeat`'s next announce (the Redis write) until the returned event is set; returns
    once it is held."""
    held, release = threading.Event(), threading.Event()
    announce = rt.announce

    def held_announce() -> None:
        if threading.current_thread() is heartbeat:
            held.set()
            release.wait(10)
        announce()

    monkeypatch.setattr(rt, "announce", held_announce)
    assert held.wait(5), "the heartbeat never beat"
    return release


def test_a_beat_in_flight_at_stop_leaves_no_record(
    settings: Settings, redis_conn: redis.Redis, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stop() retires the worker's record while its heartbeat is writing one: the beat retires it again
    (else a stopped worker counted as live until its record aged out)."""
    fast = settings.model_copy(update={"worker_heartbeat": 0.05})
    rt = runtime.start(fast, connection=redis_conn, registry=registry, name="w-stop-race")
    heartbeat = next(t for t in rt.threads if t.name == "lrpseg-heartbeat")
    retired = hold_the_next_beat(rt, heartbeat, monkeypatch)
    rt.stop()
    retired.set()
    heartbeat.join(timeout=5)
    assert not heartbeat.is_alive()
    assert "w-stop-race" not in {w.name for w in Stats(redis_conn, fast.key_prefix).live_workers(max_age=60)}
    runtime.reset()


def test_stop_waits_for_a_beat_in_flight_before_it_retires(
    settings: Settings, redis_conn: redis.Redis, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that exits right after stop() must not leave the beat's late write behind: stop()
    lets the beat land first (within HEARTBEAT_JOIN_S), then retires the record."""
    fast = settings.model_copy(update={"worker_heartbeat": 0.05})
    rt = runtime.start(fast, connection=redis_conn, registry=registry, name="w-stop-wait")
    heartbeat = next(t for t in rt.threads if t.name == "lrpseg-heartbeat")
    release = hold_the_next_beat(rt, heartbeat, monkeypatch)
    threading.Timer(0.3, release.set).start()
    rt.stop()
    assert not heartbeat.is_alive()  # the beat landed before stop() returned
    assert "w-stop-wait" not in {w.name for w in Stats(redis_conn, fast.key_prefix).live_workers(max_age=60)}
    runtime.reset()


def test_resume_after_stop_ends_the_old_threads_and_runs_one_heartbeat(
    settings: Settings, redis_conn: redis.Redis, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis goes away: the heartbeat is stuck in a Redis call while the worker loop stops and
    resumes (workers.cli). Once Redis answers, the old threads end; one heartbeat, one deliverer."""
    before = set(threading.enumerate())
    fast = settings.model_copy(update={"worker_heartbeat": 0.05, "callback_poll": 0.05, "preload": "default"})
    rt = runtime.start(fast, connection=redis_conn, registry=registry, name="w-resume")
    old = sorted(rt.threads, key=lambda t: t.name != "lrpseg-heartbeat")  # the heartbeat first
    assert [t.name for t in old] == ["lrpseg-heartbeat", "lrpseg-callbacks"] and all(t.is_alive() for t in old)
    back = hold_the_next_beat(rt, old[0], monkeypatch)  # stuck in a Redis call
    rt.stop()
    rt.resume()
    back.set()
    for thread in old:
        thread.join(timeout=5)
    assert not [t.name for t in old if t.is_alive()], "threads of the first start outlived stop()"
    new = [t for t in threading.enumerate() if t not in before]
    assert sorted(t.name for t in new) == ["lrpseg-callbacks", "lrpseg-heartbeat"]
    assert "w-resume" in {w.name for w in Stats(redis_conn, fast.key_prefix).live_workers(max_age=60)}  # not retired
    assert set(new) == {t for t in rt.threads if t.is_alive()}
    runtime.reset()
    for thread in new:
        thread.join(timeout=5)
    assert not any(t.is_alive() for t in new)
