"""Test fixtures: a real PostgreSQL (embedded by default, DATABASE_URL when set), one fresh database per test.

The session migrates one template database; each test gets its own copy (CREATE DATABASE …
TEMPLATE), so tests that run concurrent transactions or start servers see real commits and still
cannot see each other. Secrets are generated per session into the environment, never committed.
"""

from __future__ import annotations

import os

os.environ.setdefault("ORDERPIPE_PROBE_JOBS", "1")  # the `probe` job kind, before shared.jobs is imported
import secrets as token_source
import uuid
from collections.abc import Iterator
from pathlib import Path

import pg8000.native
import pytest

from shared.db import migrations
from shared.db.connection import Connection
from shared.db.embedded import EmbeddedPostgres
from shared.db.pool import parse_database_url, with_database
from shared.secrets import SECRET_NAMES, env_name, generate_secret

ROOT = Path(__file__).resolve().parent.parent
# eSewa's published UAT key (GATEWAYS.md): the one secret value allowed in tests.
ESEWA_UAT_SECRET = "8gBm/:&EnhH.1/q"  # noqa: S105


def _admin(url: str) -> pg8000.native.Connection:
    return pg8000.native.Connection(**parse_database_url(url), timeout=60)


@pytest.fixture(scope="session")
def server_url(tmp_path_factory) -> Iterator[str]:
    """A PostgreSQL server URL (its `postgres` database): DATABASE_URL, or a private embedded server."""
    external = os.environ.get("DATABASE_URL")
    if external:
        yield external
        return
    embedded = EmbeddedPostgres(tmp_path_factory.mktemp("embedded-pg"), durable=False)
    url = embedded.acquire()
    try:
        yield url
    finally:
        embedded.stop_now()


@pytest.fixture(scope="session")
def template_db(server_url) -> str:
    """A migrated template database, made once per session (per xdist worker)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"orderpipe_tmpl_{worker}_{os.getpid()}"
    admin = _admin(server_url)
    try:
        admin.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.run(f'CREATE DATABASE "{name}"')
    finally:
        admin.close()
    raw = _admin(with_database(server_url, name))
    try:
        migrations.migrate(Connection(raw))
    finally:
        raw.close()
    return name


def create_database(server_url: str, template: str | None = None) -> str:
    name = f"orderpipe_t_{uuid.uuid4().hex[:12]}"
    admin = _admin(server_url)
    try:
        if template:
            admin.run(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
        else:
            admin.run(f'CREATE DATABASE "{name}"')
    finally:
        admin.close()
    return name


def drop_database(server_url: str, name: str) -> None:
    admin = _admin(server_url)
    try:
        admin.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


@pytest.fixture
def database_url(server_url, template_db) -> Iterator[str]:
    """A fresh, migrated database of this test's own."""
    name = create_database(server_url, template_db)
    try:
        yield with_database(server_url, name)
    finally:
        drop_database(server_url, name)


@pytest.fixture
def empty_database_url(server_url) -> Iterator[str]:
    """A fresh database with nothing in it (migration tests)."""
    name = create_database(server_url)
    try:
        yield with_database(server_url, name)
    finally:
        drop_database(server_url, name)


@pytest.fixture(scope="session")
def test_secrets() -> dict[str, str]:
    values = {name: generate_secret(name) for name in SECRET_NAMES}
    values["esewa-secret-key"] = ESEWA_UAT_SECRET
    return values


@pytest.fixture
def app_env(monkeypatch, database_url, test_secrets, tmp_path) -> dict[str, str]:
    """The environment a function instance would see, pointed at this test's database."""
    from shared.runtime import reset_runtime

    env = {
        "DATABASE_URL": database_url,
        "SECRET_BACKEND": "env",
        "TASK_BACKEND": "local",
        "ORDERPIPE_DATA_DIR": str(tmp_path / "data"),
        "SAFE_MODE": "true",
        "LOG_LEVEL": "WARNING",
        "DB_POOL_SIZE": "20",
        "METRICS_REFRESH_DELAY_S": "0",  # refresh jobs due at once, so tests can run them right away
    }
    for name, value in test_secrets.items():
        env[env_name(name)] = value
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_runtime()
    yield env
    reset_runtime()


@pytest.fixture
def runtime(app_env):
    from shared.runtime import get_runtime

    return get_runtime()


@pytest.fixture
def db(runtime):
    return runtime.db


@pytest.fixture
def client_for(app_env):
    """`client_for("checkout")`: the function's own app through functions_framework.create_app."""
    import functions_framework

    def make(name: str):
        source = ROOT / "functions" / name / "main.py"
        return functions_framework.create_app(name, str(source)).test_client()

    return make


@pytest.fixture
def internal_auth(test_secrets) -> dict[str, str]:
    return {"Authorization": f"Bearer {test_secrets['internal-task-token']}"}


@pytest.fixture
def admin_auth(test_secrets) -> dict[str, str]:
    return {"Authorization": f"Bearer {test_secrets['admin-token']}"}


def random_token() -> str:
    return token_source.token_hex(8)


@pytest.fixture
def simulator(app_env, monkeypatch):
    """The gateway simulator on a free port, signing with this test's secrets; every gateway URL points at it.

    `.url`, `.pay(provider, reference, outcome="success", amount_minor=None)`, `.replay(...)`, `.refund(...)`,
    `.fault(provider, mode, count, delay_s)`, `.webhook_log(...)`, `.submit_esewa_form(form_url, fields)`;
    Stripe events go to `simulator.stripe_webhook_url` (None until a test sets it).
    """
    from shared.runtime import get_runtime, reset_runtime
    from shared.simulator.client import InProcessSimulator
    from shared.simulator.server import SimulatorServer

    server = SimulatorServer(get_runtime().secrets, host="127.0.0.1", port=0, stripe_webhook_url=None)
    server.start()
    try:
        monkeypatch.setenv("ESEWA_FORM_URL", f"{server.url}/api/epay/main/v2/form")
        monkeypatch.setenv("ESEWA_STATUS_URL", f"{server.url}/api/epay/transaction/status/")
        monkeypatch.setenv("KHALTI_BASE_URL", f"{server.url}/api/v2/")
        monkeypatch.setenv("STRIPE_API_BASE", server.url)
        reset_runtime()  # settings are read again, now pointing at the simulator
        yield InProcessSimulator(server)
    finally:
        server.stop()
