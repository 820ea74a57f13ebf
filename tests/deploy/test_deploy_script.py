"""deploy.sh against a recording fake gcloud: every flag, secret, env var, identity and binding it deploys with."""

from __future__ import annotations

import json
import stat
import sys

import pytest

from shared.config import Settings
from shared.devserver import FUNCTION_NAMES
from shared.secrets import env_name
from tests.deploy.kit import (
    DEPLOY_SH,
    EXPECTED_SECRETS,
    NEVER_DEPLOYED,
    PRIVATE_FUNCTIONS,
    PROJECT,
    PROJECT_NUMBER,
    PUBLIC_FUNCTIONS,
    REGION,
    SECRET_VERSIONS,
    env_vars,
    flag,
    manifest,
    plan_commands,
    run_deploy,
    sa_email,
    secret_refs,
    standard_args,
)

WORKER_URL = f"https://order-worker-{PROJECT_NUMBER}.{REGION}.run.app"


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """One whole deploy of every function (IAM database auth, no config file)."""
    run = run_deploy(tmp_path_factory.mktemp("deploy-full"), *standard_args())
    assert run.returncode == 0, run.stderr
    return run


def test_every_function_is_deployed_once_order_worker_first(full):
    deploys = full.deploys()
    assert sorted(deploys) == sorted(FUNCTION_NAMES)
    assert [c[3] for c in full.calls if c[1:3] == ["functions", "deploy"]][0] == "order_worker"
    assert len([c for c in full.calls if c[1:3] == ["functions", "deploy"]]) == len(FUNCTION_NAMES)


def test_each_deploy_has_the_gen2_http_basics(full):
    for name, argv in full.deploys().items():
        assert "--gen2" in argv and "--trigger-http" in argv and "--quiet" in argv
        assert flag(argv, "--runtime") == "python312"
        assert flag(argv, "--region") == REGION
        assert flag(argv, "--project") == PROJECT
        assert flag(argv, "--source") == str(full.build_dir / name)
        assert flag(argv, "--entry-point") == name
        assert flag(argv, "--build-service-account") == (
            f"projects/{PROJECT}/serviceAccounts/{sa_email('build')}")
        assert "--update-labels=app=orderpipe,env=staging" in argv


def test_public_and_private_functions(full):
    for name, argv in full.deploys().items():
        if name in PUBLIC_FUNCTIONS:
            assert "--allow-unauthenticated" in argv and "--no-allow-unauthenticated" not in argv, name
            assert flag(argv, "--ingress-settings") == "all"
        else:
            assert name in PRIVATE_FUNCTIONS
            assert "--no-allow-unauthenticated" in argv and "--allow-unauthenticated" not in argv, name
    # Only Cloud Tasks and Cloud Scheduler call these two: internal ingress admits them, not the internet.
    assert flag(full.deploys()["order_worker"], "--ingress-settings") == "internal-only"
    assert flag(full.deploys()["reconcile"], "--ingress-settings") == "internal-only"


def test_exactly_the_secrets_each_function_uses_pinned(full):
    for name, argv in full.deploys().items():
        refs = secret_refs(argv)
        assert {secret for secret, _ in refs.values()} == EXPECTED_SECRETS[name], name
        for env, (secret, version) in refs.items():
            assert env == env_name(secret)
            assert version == SECRET_VERSIONS[secret], f"{name}: {secret} not pinned to its latest version"
        if not refs:
            assert "--clear-secrets" in argv  # order_status: no secret, and none left from before
        assert env_vars(argv)["SECRET_BACKEND"] == "env"
        assert not {s for s, _ in refs.values()} & (NEVER_DEPLOYED | {"db-password"})
    resolved = {flag(c, "--secret") for c in full.calls if c[1:4] == ["secrets", "versions", "describe"]}
    assert resolved == set().union(*EXPECTED_SECRETS.values())


def test_environment_variables(full):
    for name, argv in full.deploys().items():
        env = env_vars(argv)
        spec = manifest()["functions"][name]
        assert env["GCP_PROJECT"] == PROJECT and env["GCP_REGION"] == REGION
        assert env["TASK_BACKEND"] == "cloud_tasks"
        assert env["TASKS_QUEUE_ORDERS"] == Settings().tasks_queue_orders
        assert env["TASKS_QUEUE_TIMERS"] == Settings().tasks_queue_timers
        assert env["TASKS_SERVICE_ACCOUNT"] == sa_email("tasks")
        assert env["ORDER_WORKER_URL"] == WORKER_URL
        assert env["CLOUD_SQL_INSTANCE"] == f"{PROJECT}:{REGION}:{manifest()['database']['instance']}"
        assert env["DB_NAME"] == manifest()["database"]["name"]
        assert env["DB_IAM_AUTH"] == "true"
        # IAM database user = the function's own service account without ".gserviceaccount.com".
        assert env["DB_USER"] == flag(argv, "--service-account").removesuffix(".gserviceaccount.com")
        assert env["DB_IP_TYPE"] == "public"
        assert env["DB_POOL_SIZE"] == str(spec["db_pool_size"])
        assert env["SAFE_MODE"] == "true"
        assert env["METRICS_TIMEZONE"] == "UTC"
        assert env["THREADS"] == flag(argv, "--concurrency") and env["WORKERS"] == "1"
        assert "DATABASE_URL" not in env and "ORDERPIPE_SECRET_INTERNAL_TASK_TOKEN" not in env


def test_the_environment_is_what_settings_reads(full, monkeypatch):
    for name, argv in full.deploys().items():
        for key in list(__import__("os").environ):
            if key.isupper() and key not in ("PATH", "HOME"):
                monkeypatch.delenv(key, raising=False)
        for key, value in env_vars(argv).items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        assert settings.on_google_cloud and settings.database_url is None, name
        assert settings.cloud_sql_instance and settings.db_iam_auth and settings.db_ip_type == "public"
        assert settings.db_pool_size == manifest()["functions"][name]["db_pool_size"]
        assert settings.order_worker_url == WORKER_URL and settings.secret_backend == "env"


def test_sizing_flags(full):
    for name, argv in full.deploys().items():
        spec = manifest()["functions"][name]
        assert flag(argv, "--memory") == spec["memory"]
        assert flag(argv, "--cpu") == spec["cpu"]
        assert flag(argv, "--concurrency") == str(spec["concurrency"])
        assert flag(argv, "--max-instances") == str(spec["max_instances"])
        assert flag(argv, "--min-instances") == str(spec["min_instances"])
        assert flag(argv, "--timeout") == f"{spec['timeout_s']}s"
        if spec["concurrency"] > 1:
            assert float(flag(argv, "--cpu")) >= 1, f"{name}: concurrency > 1 needs a whole vCPU"
    worker_timeout = int(flag(full.deploys()["order_worker"], "--timeout").rstrip("s"))
    assert worker_timeout > Settings().jobs_dispatch_deadline_s  # the task's deadline ends before the function's


def test_a_service_account_per_role(full):
    accounts = {name: flag(argv, "--service-account") for name, argv in full.deploys().items()}
    for name in PUBLIC_FUNCTIONS:
        assert accounts[name] == sa_email("api")
    assert accounts["order_worker"] == sa_email("worker")
    assert accounts["reconcile"] == sa_email("reconcile")
    assert accounts["admin"] == sa_email("admin")
    assert accounts["self_test"] == sa_email("selftest")
    assert len(set(accounts.values())) == 5
    assert not any("compute@developer" in a or "appspot" in a for a in accounts.values())
    # The identities that invoke are not identities that run code.
    assert sa_email("tasks") not in accounts.values() and sa_email("scheduler") not in accounts.values()


def test_invoker_bindings(full):
    assert full.bindings() == [
        ("order_worker", f"serviceAccount:{sa_email('tasks')}"),
        ("reconcile", f"serviceAccount:{sa_email('scheduler')}"),
    ]
    for call in full.calls:
        if call[1:3] == ["functions", "add-invoker-policy-binding"]:
            assert flag(call, "--region") == REGION and flag(call, "--project") == PROJECT
    # Cloud Tasks signs its OIDC token as TASKS_SERVICE_ACCOUNT: the member that may invoke order_worker.
    assert env_vars(full.deploys()["checkout"])["TASKS_SERVICE_ACCOUNT"] == sa_email("tasks")


def test_order_worker_url_is_checked_against_the_deployed_service(full):
    kinds = [" ".join(c[1:4]) for c in full.calls]
    describe = kinds.index("run services describe")
    assert full.calls[describe][4] == "order-worker"
    assert kinds.index("functions deploy order_worker") < describe < kinds.index("functions deploy checkout")
    assert f"order_worker serves {WORKER_URL}" in full.stdout


def test_a_rerun_makes_the_same_calls(full, tmp_path):
    again = run_deploy(tmp_path, *standard_args(), build_dir=full.build_dir)
    assert again.returncode == 0, again.stderr
    assert again.calls == full.calls


def test_only_some_functions(tmp_path):
    run = run_deploy(tmp_path, *standard_args("--only", "checkout,order_status"))
    assert run.returncode == 0, run.stderr
    assert list(run.deploys()) == ["checkout", "order_status"]
    assert run.bindings() == []
    assert {flag(c, "--secret") for c in run.calls if c[1:3] == ["secrets", "versions"]} == EXPECTED_SECRETS["checkout"]
    assert sorted(p.name for p in run.build_dir.iterdir()) == ["_migrate", "checkout", "order_status"]
    # Still the same ORDER_WORKER_URL, computed without deploying order_worker.
    assert env_vars(run.deploys()["checkout"])["ORDER_WORKER_URL"] == WORKER_URL


def test_dry_run_calls_nothing_and_prints_the_whole_plan(tmp_path):
    run = run_deploy(tmp_path, *standard_args("--dry-run", "--migrate"))
    assert run.returncode == 0, run.stderr
    assert run.calls == []
    assert not run.build_dir.exists()  # nothing staged either
    for name in FUNCTION_NAMES:
        assert f"gcloud functions deploy {name} " in run.stdout
    assert "gcloud projects describe" in run.stdout
    assert run.stdout.count("gcloud secrets versions describe latest") == len(set().union(*EXPECTED_SECRETS.values()))
    assert "migrate.py --app-role" in run.stdout
    assert "172 at most" in run.stdout and "of 175" in run.stdout


def test_dry_run_prints_exactly_the_calls_a_deploy_makes(tmp_path):
    pins = [f"--secret-version={s}={v}" for s, v in SECRET_VERSIONS.items() if s not in NEVER_DEPLOYED]
    args = standard_args("--project-number", PROJECT_NUMBER, *pins)
    plan = run_deploy(tmp_path / "plan", *args, "--dry-run", build_dir=tmp_path / "build")
    real = run_deploy(tmp_path / "real", *args, build_dir=tmp_path / "build")
    assert plan.returncode == 0 and real.returncode == 0, plan.stderr + real.stderr
    assert plan.calls == []
    deploying = [c for c in real.calls if c[1] == "functions"]
    assert plan_commands(plan.stdout) == deploying
    # With everything pinned up front, nothing is asked of gcloud but the worker URL check.
    assert [c[1:3] for c in real.calls if c[1] != "functions"] == [["run", "services"]]


def test_password_auth_adds_db_password_everywhere(tmp_path):
    run = run_deploy(tmp_path, *standard_args("--db-password-auth"))
    assert run.returncode == 0, run.stderr
    for name, argv in run.deploys().items():
        secrets = {secret for secret, _ in secret_refs(argv).values()}
        assert secrets == EXPECTED_SECRETS[name] | {"db-password"}, name
        env = env_vars(argv)
        assert env["DB_IAM_AUTH"] == "false" and env["DB_USER"] == manifest()["database"]["password_user"]


def test_admin_and_self_test_may_be_made_public(tmp_path):
    run = run_deploy(tmp_path, *standard_args("--public", "admin", "--only", "admin,self_test"))
    assert run.returncode == 0, run.stderr
    assert "--allow-unauthenticated" in run.deploys()["admin"]
    assert "--no-allow-unauthenticated" in run.deploys()["self_test"]


@pytest.mark.parametrize("args", [
    ["--public", "order_worker"],  # its code trusts IAM: never public
    ["--only", "nosuchfunction"],
    ["--secret-version", "admin-token=latest"],
    ["--bogus"],
    ["--env", "Prod!"],
])
def test_bad_flags_stop_before_any_call(tmp_path, args):
    run = run_deploy(tmp_path, *standard_args(*args))
    assert run.returncode != 0
    assert run.calls == []
    assert not run.build_dir.exists()


def test_project_and_region_are_required(tmp_path):
    run = run_deploy(tmp_path, "--region", REGION)
    assert run.returncode != 0 and run.calls == []


def test_a_failed_gcloud_call_stops_the_deploy(tmp_path):
    run = run_deploy(tmp_path, *standard_args(), env={"FAKE_GCLOUD_FAIL_ON": "functions deploy checkout"})
    assert run.returncode != 0
    assert list(run.deploys()) == ["order_worker", "checkout"]
    assert "simulated failure" in run.stderr


def test_a_secret_without_a_version_stops_before_deploying(tmp_path):
    versions = {k: v for k, v in SECRET_VERSIONS.items() if k != "admin-token"}
    run = run_deploy(tmp_path, *standard_args(), env={"FAKE_GCLOUD_SECRET_VERSIONS": json.dumps(versions)})
    assert run.returncode != 0
    assert run.deploys() == {}


def test_the_config_file_from_terraform(tmp_path):
    config = {
        "project_id": PROJECT, "region": REGION, "project_number": "555", "env": "prod",
        "instance_connection_name": f"{PROJECT}:{REGION}:pg-from-tf", "db_name": "orderpipe", "db_iam_auth": True,
        "safe_mode": False, "metrics_timezone": "Asia/Kathmandu", "public_base_url": "https://shop.example.com",
        "queues": {"orders": "orderpipe-orders", "timers": "orderpipe-timers"},
        "service_accounts": {"tasks": f"tasks-x@{PROJECT}.iam.gserviceaccount.com"},
        "extra_env": {"ESEWA_PRODUCT_CODE": "SHOP123"},
    }
    path = tmp_path / "prod.json"
    path.write_text(json.dumps(config))
    run = run_deploy(tmp_path, "--project", PROJECT, "--region", REGION, "--env", "prod", "--config", str(path),
                     "--only", "checkout")
    assert run.returncode == 0, run.stderr
    assert not any(c[1:3] == ["projects", "describe"] for c in run.calls)  # the number came from the file
    env = env_vars(run.deploys()["checkout"])
    assert env["ORDER_WORKER_URL"] == f"https://order-worker-555.{REGION}.run.app"
    assert env["CLOUD_SQL_INSTANCE"].endswith(":pg-from-tf")
    assert env["SAFE_MODE"] == "false" and env["METRICS_TIMEZONE"] == "Asia/Kathmandu"
    assert env["PUBLIC_BASE_URL"] == "https://shop.example.com"
    assert env["TASKS_SERVICE_ACCOUNT"] == f"tasks-x@{PROJECT}.iam.gserviceaccount.com"
    assert env["ESEWA_PRODUCT_CODE"] == "SHOP123"

    other = run_deploy(tmp_path, "--project", "other-proj", "--region", REGION, "--config", str(path))
    assert other.returncode != 0 and other.calls == [] and "is for project" in other.stderr


def _fake_python(tmp_path):
    """An ORDERPIPE_PYTHON that records how deploy.sh runs the migration, into the gcloud log."""
    script = tmp_path / "fake-python"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "with open(os.environ['FAKE_GCLOUD_LOG'], 'a') as log:\n"
        "    keys = ('CLOUD_SQL_INSTANCE', 'DB_NAME', 'DB_USER', 'DB_IAM_AUTH', 'DB_IP_TYPE', 'GCP_PROJECT',\n"
        "            'SECRET_BACKEND', 'DATABASE_URL', 'PYTHONPATH')\n"
        "    env = {k: os.environ.get(k) for k in keys}\n"
        "    log.write(json.dumps(['python', *sys.argv[1:], env]) + '\\n')\n"
    )
    script.chmod(0o755)
    return script


def test_migrate_runs_the_staged_code_through_the_connector_before_deploying(tmp_path):
    python = _fake_python(tmp_path)
    run = run_deploy(tmp_path, *standard_args("--migrate"), env={
        "ORDERPIPE_PYTHON": str(python), "DATABASE_URL": "postgresql://someone@localhost/local"})
    assert run.returncode == 0, run.stderr
    first = run.calls[0]
    assert first[0] == "python" and all(c[0] == "gcloud" for c in run.calls[1:])
    script, *args, env = first[1:]
    assert script == str(run.build_dir / "_migrate" / "migrate.py")
    assert (run.build_dir / "_migrate" / "shared" / "db" / "migrations").is_dir()
    assert env["DATABASE_URL"] is None and env["PYTHONPATH"] is None  # never a local database by accident
    assert env["CLOUD_SQL_INSTANCE"] == f"{PROJECT}:{REGION}:orderpipe-pg"
    assert env["DB_IAM_AUTH"] == "true" and env["DB_IP_TYPE"] == "public"
    assert env["DB_USER"] == sa_email("deployer").removesuffix(".gserviceaccount.com")
    assert env["SECRET_BACKEND"] == "secret_manager" and env["GCP_PROJECT"] == PROJECT
    members = [args[i + 1] for i, a in enumerate(args) if a == "--member"]
    users = {env_vars(argv)["DB_USER"] for argv in run.deploys().values()}
    assert set(members) == users  # every function's database user gets the app role
    assert args[:2] == ["--app-role", manifest()["database"]["app_role"]]


def test_migrate_only_calls_no_gcloud(tmp_path):
    python = _fake_python(tmp_path)
    run = run_deploy(tmp_path, *standard_args("--migrate-only"), env={"ORDERPIPE_PYTHON": str(python)})
    assert run.returncode == 0, run.stderr
    assert [c[0] for c in run.calls] == ["python"]


def test_deploy_sh_is_strict_bash():
    text = DEPLOY_SH.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert DEPLOY_SH.stat().st_mode & stat.S_IXUSR


def test_self_test_finds_every_secret_it_checks_among_those_deployed(full, monkeypatch):
    import os
    from types import SimpleNamespace

    from shared.flows import health
    from shared.secrets import build_secret_source, generate_secret

    argv = full.deploys()["self_test"]
    for key in list(os.environ):
        if key.startswith(("ORDERPIPE_", "DB_", "DATABASE_", "SECRET_", "TASK", "GCP_", "CLOUD_SQL")):
            monkeypatch.delenv(key)
    for key, value in env_vars(argv).items():
        monkeypatch.setenv(key, value)
    for env, (secret, _version) in secret_refs(argv).items():
        monkeypatch.setenv(env, generate_secret(secret))
    settings = Settings()
    assert health._check_secrets(SimpleNamespace(settings=settings, secrets=build_secret_source(settings))) == "ok"


def test_an_explicit_order_worker_url(tmp_path):
    url = "https://order-worker-x7f3ab2c4d-el.a.run.app"
    run = run_deploy(tmp_path, *standard_args("--order-worker-url", url))
    assert run.returncode == 0, run.stderr
    assert not any(c[1:3] == ["projects", "describe"] for c in run.calls)
    assert {env_vars(argv)["ORDER_WORKER_URL"] for argv in run.deploys().values()} == {url}
    assert f"order_worker serves {url}" in run.stdout  # the fake service lists it among its URLs


def test_a_worker_url_the_service_does_not_serve_stops_the_deploy(tmp_path):
    run = run_deploy(tmp_path, *standard_args("--order-worker-url", "https://wrong.example.com"))
    assert run.returncode != 0
    assert list(run.deploys()) == ["order_worker"]
    assert "does not serve https://wrong.example.com" in run.stderr


def test_bootstrap_db_runs_the_one_off_grants_as_postgres(tmp_path):
    python = _fake_python(tmp_path)
    run = run_deploy(tmp_path, *standard_args("--bootstrap-db"), env={"ORDERPIPE_PYTHON": str(python)})
    assert run.returncode == 0, run.stderr
    assert len(run.calls) == 1 and run.calls[0][0] == "python"
    script, *args, env = run.calls[0][1:]
    assert script == str(run.build_dir / "_migrate" / "migrate.py")
    assert args == ["--bootstrap", "--app-role", manifest()["database"]["app_role"],
                    "--deployer", sa_email("deployer").removesuffix(".gserviceaccount.com")]
    assert env["DB_USER"] == "postgres" and env["DB_IAM_AUTH"] == "false" and env["DATABASE_URL"] is None
