"""The house is one-way: launch -> everything; service -> core, lrpseg, schemas, pacs; pacs -> core,
lrpseg, schemas (never fastapi); workers -> core, lrpseg, schemas; core -> schemas, lrpseg (never
fastapi); lrpseg -> schemas; no arrow between service and workers, nothing imports launch; no import cycle.

The graph is read from the source (ast), every import counted: top-level, inside functions
and under TYPE_CHECKING alike, so a lazy import cannot hide an arrow.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lrpseg", "core", "service", "workers", "schemas", "launch", "pacs")

# package -> first-party packages it may import (besides itself)
ALLOWED = {
    "schemas": set(),
    "lrpseg": {"schemas"},
    "core": {"schemas", "lrpseg"},
    "pacs": {"core", "schemas", "lrpseg"},  # the DICOM intake and the C-STORE SCP (no fastapi)
    "service": {"core", "schemas", "lrpseg", "pacs"},
    "workers": {"core", "schemas", "lrpseg"},
    "launch": {"service", "workers", "core", "schemas", "lrpseg", "pacs"},
}
# third-party packages a package must never import
FORBIDDEN_THIRD_PARTY = {
    "core": {"fastapi", "starlette", "uvicorn"},
    "workers": {"fastapi", "starlette", "uvicorn"},
    "pacs": {"fastapi", "starlette", "uvicorn"},
    "lrpseg": {"fastapi", "starlette", "uvicorn", "rq", "redis"},
    "schemas": {"fastapi", "starlette", "torch", "rq", "redis"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module `name` imports (first-party resolved to a module of `known`, else the top name)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                out.add(sub if sub in known else source)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def test_no_forbidden_direction() -> None:
    wrong = []
    for name, targets in graph().items():
        pkg = name.split(".")[0]
        for target in targets:
            top = target.split(".")[0]
            if top in PACKAGES and top != pkg and top not in ALLOWED[pkg]:
                wrong.append(f"{name} -> {target}")
            if top in FORBIDDEN_THIRD_PARTY.get(pkg, set()):
                wrong.append(f"{name} -> {target} (third party)")
    assert not wrong, "imports against the house's direction:\n" + "\n".join(sorted(wrong))


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of first-party modules, or None (iterative DFS, colours white/grey/black)."""
    state: dict[str, int] = {}
    for start in sorted(edges):
        if state.get(start):
            continue
        stack = [(start, iter(sorted(edges[start])))]
        path = [start]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            for child in children:
                if child not in edges:
                    continue
                if state.get(child) == 1:
                    return [*path[path.index(child) :], child]
                if not state.get(child):
                    state[child] = 1
                    path.append(child)
                    stack.append((child, iter(sorted(edges[child]))))
                    break
            else:
                state[node] = 2
                stack.pop()
                path.pop()
    return None


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle() -> None:
    edges = graph()
    # a package's __init__ re-exporting its own modules is not a cycle between them: drop the
    # arrows from a package's modules up to their own package __init__
    for name, targets in edges.items():
        edges[name] = {t for t in targets if not (name.startswith(t + ".") and t in edges)}
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_importlib_in_the_packages() -> None:
    """Launchers import what they start by name (launch.cli), so the graph above sees every arrow."""
    users = [name for name, targets in graph().items() if "importlib" in targets]
    assert not users, users


def test_worker_does_not_load_fastapi() -> None:
    code = (
        "import sys, workers.worker, workers.tasks, launch.cli; launch.cli.load('worker'); "
        "assert 'fastapi' not in sys.modules, 'fastapi loaded'"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_dimse_does_not_load_fastapi() -> None:
    code = (
        "import sys, launch.cli, pacs.scp; launch.cli.load('dimse'); "
        "assert 'fastapi' not in sys.modules, 'fastapi loaded'"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_settings_is_a_leaf() -> None:
    """core.settings imports nothing of the project but the key and host parsers (core.security),
    which import nothing of the project at all."""
    edges = graph()
    first_party = {t for t in edges["core.settings"] if t.split(".")[0] in PACKAGES}
    assert first_party <= {"core.security"}, first_party
    assert not {t for t in edges["core.security"] if t.split(".")[0] in PACKAGES}
