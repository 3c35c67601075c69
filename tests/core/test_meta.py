"""Job meta names (core.meta): the end hooks' settings and the task names RQ resolves."""

from __future__ import annotations

import importlib

from core import meta


def test_hook_settings_only_when_the_job_has_end_hooks() -> None:
    assert meta.hook_settings({}) is None
    assert meta.hook_settings({meta.HOOKS: {}}) is None
    assert meta.hook_settings({meta.HOOKS: {"prefix": "p", "ttl": "60"}}) == ("p", 60)
    assert meta.hook_settings({meta.HOOKS: {"prefix": "p"}}) == ("p", meta.DEFAULT_HOOK_TTL)


def test_meta_of_tolerates_a_job_without_meta() -> None:
    class Bare:
        meta = None

    assert meta.meta_of(Bare()) == {}
    assert meta.meta_of(object()) == {}


def test_the_named_task_and_hooks_exist() -> None:
    for dotted in (meta.TASK, meta.ON_SUCCESS, meta.ON_FAILURE):
        module, _, name = dotted.rpartition(".")
        assert callable(getattr(importlib.import_module(module), name)), dotted
