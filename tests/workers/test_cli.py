"""`lrpseg worker`: what the command sets up before the worker is built."""

from __future__ import annotations

import argparse
import os

import pytest

from lrpseg.heap import HUGE_PAGES_ENV
from workers import cli, worker
from workers.worker import ModelWorker


def test_the_worker_command_turns_huge_pages_on_before_it_builds_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k != HUGE_PAGES_ENV})
    seen: list[str | None] = []

    def build(settings: object) -> ModelWorker:  # where torch would first allocate
        seen.append(os.environ.get(HUGE_PAGES_ENV))
        raise RuntimeError("built")

    monkeypatch.setattr(worker, "build_worker", build)
    monkeypatch.setattr(cli.logs, "configure", lambda *args: None)  # leave this process's logging as it is
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    with pytest.raises(RuntimeError, match="built"):
        cli.run(parser.parse_args(["--redis-url", "redis://127.0.0.1:6379/15", "--burst"]))
    assert seen == ["1"]  # lrpseg.heap.use_huge_pages
