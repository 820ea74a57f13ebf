"""`deploy.sh --migrate` on a real PostgreSQL, through the Cloud SQL connector code path.

Only the connector's network half is replaced: a stand-in `Connector` (the class
cloud-sql-python-connector exports) records what it is asked for and opens a pg8000 DB-API
connection to the test server, as the requested user. Everything else is what runs in Cloud
Build: deploy.sh stages build/_migrate/, runs migrate.py with the environment the plan gives it,
and migrate.py uses shared's Settings, ConnectionFactory (its Cloud SQL branch) and migrations.
The users are real PostgreSQL roles, so the grants are proven too: migrations run as the non-superuser
deployer (which PostgreSQL 15+ only allows after the bootstrap grant), and each function's user can
then read and write every table.
"""

from __future__ import annotations

import importlib.util
import json
import secrets
import sys
from pathlib import Path
from types import SimpleNamespace

import pg8000.native
import pytest

from shared.db import migrations
from shared.db.connection import Connection
from shared.db.pool import parse_database_url
from tests.deploy.kit import INFRA, REGION, deploy_plan_module, manifest, run_deploy

FAKE_CONNECTOR = '''
"""Stands in for google.cloud.sql.connector.Connector: records, then connects to the test server."""
import json, os

import pg8000.dbapi


def _record(entry):
    with open(os.environ["FAKE_GCLOUD_LOG"], "a") as log:
        log.write(json.dumps(["connector", entry], default=str) + "\\n")


class FakeConnector:
    def __init__(self, **kwargs):
        _record({"init": {k: str(v) for k, v in kwargs.items()}})

    def connect(self, instance, driver, **kwargs):
        _record({"instance": instance, "driver": driver,
                 **{k: v for k, v in kwargs.items() if k != "password"}, "password_given": "password" in kwargs})
        from shared.db.pool import parse_database_url

        args = parse_database_url(os.environ["FAKE_CLOUD_SQL_URL"])
        if kwargs["user"] != "postgres":  # Cloud SQL's built-in admin: the test server's own superuser
            args["user"] = kwargs["user"]
            args.pop("password", None)
        return pg8000.dbapi.connect(**args)

    def close(self):
        pass


def install():
    import google.cloud.sql.connector as connector

    connector.Connector = FakeConnector
'''

WRAPPER = '''#!{python}
"""ORDERPIPE_PYTHON for the test: `python script.py args` with the stand-in connector installed."""
import os, runpy, sys

sys.argv = sys.argv[1:]
args = sys.argv
args[args.index("--app-role") + 1] = os.environ["TEST_APP_ROLE"]  # one app role per test, not the global one
sys.path.insert(0, os.path.dirname(os.path.abspath(args[0])))  # as `python build/_migrate/migrate.py` has it
sys.path.insert(1, {helpers!r})
import fake_cloudsql

fake_cloudsql.install()
runpy.run_path(args[0], run_name="__main__")
'''


def _admin(url: str) -> pg8000.native.Connection:
    return pg8000.native.Connection(**parse_database_url(url), timeout=30)


@pytest.fixture
def cloud(server_url, tmp_path):
    """A made-up project whose service accounts' IAM database users exist as real login roles."""
    suffix = secrets.token_hex(4)
    project = f"mig-{suffix}"
    accounts = manifest()["service_accounts"]
    deployer = f"{accounts['deployer']['account_id']}@{project}.iam"
    members = [f"{accounts[r]['account_id']}@{project}.iam" for r in ("admin", "api", "reconcile", "selftest",
                                                                       "worker")]
    app_role = f"orderpipe_app_{suffix}"
    admin = _admin(server_url)
    try:
        for role in (deployer, *members):
            admin.run(f'CREATE ROLE "{role}" LOGIN')
    finally:
        admin.close()
    try:
        args = parse_database_url(server_url)
        args["user"] = deployer
        args.pop("password", None)
        pg8000.native.Connection(**args, timeout=10).close()
    except Exception as exc:  # a server that wants passwords for new roles
        _drop_roles(server_url, [deployer, *members, app_role])
        pytest.skip(f"cannot log in as a new role on this server: {exc}")
    helpers = tmp_path / "helpers"
    helpers.mkdir()
    (helpers / "fake_cloudsql.py").write_text(FAKE_CONNECTOR)
    wrapper = tmp_path / "python-with-fake-connector"
    wrapper.write_text(WRAPPER.format(python=sys.executable, helpers=str(helpers)))
    wrapper.chmod(0o755)
    yield SimpleNamespace(project=project, deployer=deployer, members=members, app_role=app_role, wrapper=wrapper,
                          helpers=helpers)
    _drop_roles(server_url, [*members, deployer, app_role])


def _drop_roles(server_url: str, roles: list[str]) -> None:
    admin = _admin(server_url)
    try:
        for role in roles:
            admin.run(f'DROP ROLE IF EXISTS "{role}"')
    finally:
        admin.close()


def _migrate_module():
    spec = importlib.util.spec_from_file_location("orderpipe_infra_migrate", INFRA / "migrate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _as(url: str, user: str) -> Connection:
    args = parse_database_url(url)
    args["user"] = user
    args.pop("password", None)
    return Connection(pg8000.native.Connection(**args, timeout=30))


def _bootstrap(cloud, database_url, monkeypatch, tmp_path):
    """`deploy.sh --bootstrap-db`'s command, in this process (it asks for the postgres password)."""
    plan_module = deploy_plan_module()
    options = plan_module.options_from(["--project", cloud.project, "--region", REGION,
                                        "--build-dir", str(tmp_path / "build")])
    env = plan_module.Plan(options).migrate_env(user="postgres", iam=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FAKE_CLOUD_SQL_URL", database_url)
    monkeypatch.setenv("FAKE_GCLOUD_LOG", str(tmp_path / "bootstrap.jsonl"))
    monkeypatch.syspath_prepend(str(cloud.helpers))
    import fake_cloudsql

    fake_cloudsql.install()
    migrate = _migrate_module()
    monkeypatch.setattr(migrate.getpass, "getpass", lambda prompt: "typed-at-the-terminal")
    assert migrate.main(["--bootstrap", "--app-role", cloud.app_role, "--deployer", cloud.deployer]) == 0
    record = json.loads((tmp_path / "bootstrap.jsonl").read_text().splitlines()[-1])[1]
    assert record["user"] == "postgres" and record["password_given"] and "enable_iam_auth" not in record


def test_bootstrap_migrate_as_the_deployer_then_every_function_user_can_work(cloud, empty_database_url,
                                                                             monkeypatch, tmp_path):
    _bootstrap(cloud, empty_database_url, monkeypatch, tmp_path)

    run = run_deploy(tmp_path / "deploy", "--project", cloud.project, "--region", REGION, "--migrate-only",
                     build_dir=tmp_path / "build",
                     env={"ORDERPIPE_PYTHON": str(cloud.wrapper), "FAKE_CLOUD_SQL_URL": empty_database_url,
                          "TEST_APP_ROLE": cloud.app_role, "DATABASE_URL": "postgresql://nobody@localhost/wrong"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "applied 0001_core" in run.stdout
    assert f"migrations from {tmp_path / 'build' / '_migrate' / 'shared'}" in run.stdout  # the staged code ran
    assert f"granted {cloud.app_role} to {', '.join(cloud.members)}" in run.stdout

    connector = [entry for kind, entry in run.calls if kind == "connector"]
    assert connector[0] == {"init": {"refresh_strategy": "lazy", "ip_type": "IPTypes.PUBLIC"}}
    call = connector[1]
    assert call["instance"] == f"{cloud.project}:{REGION}:{manifest()['database']['instance']}"
    assert call["driver"] == "pg8000" and call["db"] == manifest()["database"]["name"]
    assert call["user"] == cloud.deployer and call["enable_iam_auth"] is True and call["password_given"] is False

    # Every function's IAM user: the schema is current (readyz) and every table is theirs to use.
    for member in cloud.members:
        conn = _as(empty_database_url, member)
        try:
            assert migrations.is_current(conn)
            tables = [row["name"] for row in conn.fetch_all(
                "SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public'")]
            assert "jobs" in tables
            for table in tables:
                assert conn.fetch_value(
                    "SELECT has_table_privilege(current_user, :t, 'SELECT, INSERT, UPDATE, DELETE')", t=table), table
            assert not conn.fetch_value("SELECT has_schema_privilege(current_user, 'public', 'CREATE')")
        finally:
            conn.close()

    again = run_deploy(tmp_path / "deploy", "--project", cloud.project, "--region", REGION, "--migrate-only",
                       build_dir=tmp_path / "build",
                       env={"ORDERPIPE_PYTHON": str(cloud.wrapper), "FAKE_CLOUD_SQL_URL": empty_database_url,
                            "TEST_APP_ROLE": cloud.app_role})
    assert again.returncode == 0, again.stdout + again.stderr
    assert "database is up to date" in again.stdout


def test_without_the_bootstrap_the_deployer_cannot_create_tables(cloud, empty_database_url, tmp_path):
    """Why --bootstrap-db exists: on PostgreSQL 15+ only the database owner may create in schema public."""
    conn = _as(empty_database_url, cloud.deployer)
    try:
        version = conn.fetch_value("SELECT current_setting('server_version_num')::int")
        if version < 150000:
            pytest.skip("PostgreSQL < 15 lets everyone create in public")
        assert not conn.fetch_value("SELECT has_schema_privilege(current_user, 'public', 'CREATE')")
    finally:
        conn.close()
    run = run_deploy(tmp_path / "deploy", "--project", cloud.project, "--region", REGION, "--migrate-only",
                     build_dir=tmp_path / "build",
                     env={"ORDERPIPE_PYTHON": str(cloud.wrapper), "FAKE_CLOUD_SQL_URL": empty_database_url,
                          "TEST_APP_ROLE": cloud.app_role})
    assert run.returncode != 0
    assert "applied" not in run.stdout
    assert "42501" in run.stderr and "--bootstrap-db" in run.stderr


def test_migrate_py_refuses_a_database_url(monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", "postgresql://someone@localhost/x")
    monkeypatch.setenv("CLOUD_SQL_INSTANCE", "p:r:i")
    assert _migrate_module().main([]) == 2
    assert "Cloud SQL only" in capsys.readouterr().err


def test_grants_are_quoted():
    statements = _migrate_module().grant_statements('app"role', ['a@b.iam'])
    assert statements[-1] == 'GRANT "app""role" TO "a@b.iam"'
    assert all('"app""role"' in s for s in statements)


def test_the_bootstrap_command_asks_for_no_stored_secret(tmp_path):
    plan_module = deploy_plan_module()
    options = plan_module.options_from(["--project", "demo-proj", "--region", REGION, "--build-dir", str(tmp_path)])
    argv = plan_module.Plan(options).bootstrap_command("python3")
    assert "DB_USER=postgres" in argv and "DB_IAM_AUTH=false" in argv
    assert argv[argv.index("--deployer") + 1] == "orderpipe-deployer@demo-proj.iam"
    assert not any("PASSWORD" in word.upper() for word in argv)
    assert Path(argv[argv.index("python3") + 1]) == tmp_path / "_migrate" / "migrate.py"
