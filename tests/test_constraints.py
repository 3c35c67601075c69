"""constraints.txt: every dependency pinned, within pyproject's range, and installed as pinned."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.test_deploy_files import dockerfile_instructions

ROOT = Path(__file__).resolve().parent.parent


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"not an exact pin: {line!r}"
            out[canonicalize_name(name)] = version.strip()
    return out


def requirements() -> list[Requirement]:
    """The project's own dependencies: base, and every extra (without the self-reference)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return [req for req in map(Requirement, listed) if canonicalize_name(req.name) != "lrpseg"]


@pytest.mark.parametrize("requirement", requirements(), ids=str)
def test_each_dependency_is_pinned_within_its_range(requirement: Requirement) -> None:
    pinned = pins().get(canonicalize_name(requirement.name))
    assert pinned is not None, f"{requirement.name} is not in constraints.txt (make constraints)"
    assert requirement.specifier.contains(pinned, prereleases=True), (
        f"{requirement.name}=={pinned} is outside {requirement}"
    )


def test_the_environment_runs_the_pinned_versions() -> None:
    """What the tests run against is what constraints.txt says (make install installs under it)."""
    wrong = {}
    for name, version in pins().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # a platform's own wheels (CUDA libraries) need not all be here
        if installed != version:
            wrong[name] = (installed, version)
    assert not wrong, f"installed vs pinned: {wrong}"


def test_make_and_the_image_install_under_the_constraints() -> None:
    make = (ROOT / "Makefile").read_text()
    assert "pip install -q -c constraints.txt -e '.[test]'" in make
    runs = [rest for word, rest in dockerfile_instructions() if word == "RUN" and "pip install" in rest]
    assert "pip install -c constraints.txt ." in runs[0]
    copied = [rest for word, rest in dockerfile_instructions() if word == "COPY"]
    assert "constraints.txt" in copied[0].split()
