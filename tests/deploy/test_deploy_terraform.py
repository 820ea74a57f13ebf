"""infra/ parses (python-hcl2) and agrees with the code: queues, retries, schedules, secrets, identities, budget."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest

from shared.config import Settings
from shared.devserver import FUNCTION_NAMES
from shared.jobs.queues import QUEUES, RATE_LIMITS, retry_policy
from shared.schedules import SCHEDULES
from shared.secrets import SECRET_NAMES
from tests.deploy.kit import EXPECTED_SECRETS, INFRA, NEVER_DEPLOYED, PUBLIC_FUNCTIONS, ROOT, manifest

_META = {"__is_block__", "__comments__", "__inline_comments__", "__start_line__", "__end_line__"}


def _clean(value: Any) -> Any:
    """python-hcl2 output without its metadata, string literals unquoted (v8 keeps the quotes; v5-7 do not)."""
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items() if k not in _META}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _load(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        return _clean(hcl2.load(handle))


@pytest.fixture(scope="module")
def tf() -> dict[str, Any]:
    """Every root .tf file merged: locals, resources by (type, name), variables, outputs, data."""
    merged: dict[str, Any] = {"locals": {}, "resource": {}, "variable": {}, "output": {}, "data": {}, "module": {}}
    for path in sorted(INFRA.glob("*.tf")):
        parsed = _load(path)
        for block in parsed.get("locals", []):
            merged["locals"].update(block)
        for kind in ("resource", "data"):
            for block in parsed.get(kind, []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        merged[kind][(rtype, name)] = body
        for kind in ("variable", "output", "module"):
            for block in parsed.get(kind, []):
                merged[kind].update(block)
    return merged


def _seconds(duration: str) -> float:
    assert duration.endswith("s"), duration
    return float(duration[:-1])


def _one(body: dict[str, Any], block: str) -> dict[str, Any]:
    blocks = body[block]
    assert isinstance(blocks, list) and len(blocks) == 1, block
    return blocks[0]


def test_every_tf_file_parses():
    files = sorted(INFRA.rglob("*.tf"))
    assert len(files) >= 8
    for path in files:
        assert isinstance(_load(path), dict), path


def test_required_apis(tf):
    apis = set(tf["locals"]["apis"])
    assert {"run.googleapis.com", "cloudfunctions.googleapis.com", "cloudbuild.googleapis.com",
            "artifactregistry.googleapis.com", "sqladmin.googleapis.com", "cloudtasks.googleapis.com",
            "cloudscheduler.googleapis.com", "secretmanager.googleapis.com", "iam.googleapis.com"} <= apis
    body = tf["resource"][("google_project_service", "apis")]
    assert body["for_each"] == "${toset(local.apis)}" and body["disable_on_destroy"] is False


def test_queues_equal_the_code(tf):
    settings = Settings()
    queues = tf["locals"]["task_queues"]
    assert set(queues) == set(QUEUES)
    assert queues["orders"]["name"] == settings.tasks_queue_orders == manifest()["queues"]["orders"]
    assert queues["timers"]["name"] == settings.tasks_queue_timers == manifest()["queues"]["timers"]
    for queue, limits in RATE_LIMITS.items():
        assert {k: queues[queue][k] for k in limits} == limits
    policy = retry_policy(settings)
    retry = tf["locals"]["task_retry"]
    assert retry["max_attempts"] == policy.max_attempts == 12
    assert _seconds(retry["min_backoff"]) == policy.min_backoff_s == 1.0
    assert _seconds(retry["max_backoff"]) == policy.max_backoff_s == 300.0
    assert retry["max_doublings"] == policy.max_doublings == 5

    body = tf["resource"][("google_cloud_tasks_queue", "queues")]
    assert body["for_each"] == "${local.task_queues}" and body["name"] == "${each.value.name}"
    assert body["location"] == "${var.region}"
    limits = _one(body, "rate_limits")
    for key in ("max_dispatches_per_second", "max_concurrent_dispatches"):
        assert limits[key] == "${each.value." + key + "}"
    config = _one(body, "retry_config")
    for key in ("max_attempts", "min_backoff", "max_backoff", "max_doublings"):
        assert config[key] == "${local.task_retry." + key + "}"
    assert "max_retry_duration" not in config  # attempts, not time, end the retries (as the local queue does)


def test_scheduler_jobs_equal_shared_schedules(tf):
    jobs = tf["locals"]["schedules"]
    assert set(jobs) == {s.name for s in SCHEDULES}
    for schedule in SCHEDULES:
        job = jobs[schedule.name]
        assert job["cron"] == schedule.cron
        assert job["tasks"] == list(schedule.tasks)
        assert job["window_hours"] == schedule.window_hours
        assert job["in_metrics_timezone"] is schedule.timezone_setting

    body = tf["resource"][("google_cloud_scheduler_job", "reconcile")]
    assert body["for_each"] == "${local.schedules}" and body["name"] == "${each.key}"
    assert body["schedule"] == "${each.value.cron}"
    assert body["time_zone"] == '${each.value.in_metrics_timezone ? var.metrics_timezone : "Etc/UTC"}'
    assert tf["variable"]["metrics_timezone"]["default"] == Settings().metrics_timezone
    assert body["attempt_deadline"] == "${local.manifest.functions.reconcile.timeout_s}s"
    assert 15 <= manifest()["functions"]["reconcile"]["timeout_s"] <= 1800  # Cloud Scheduler's HTTP deadline range

    target = _one(body, "http_target")
    assert target["http_method"] == "POST"
    assert target["uri"] == "${local.reconcile_url}"
    assert tf["locals"]["reconcile_url"] == (
        '${var.reconcile_url != "" ? var.reconcile_url : module.layout.function_urls["reconcile"]}')
    assert target["headers"] == {"Content-Type": "application/json"}
    assert target["body"] == ("${base64encode(jsonencode(merge({tasks = each.value.tasks}, each.value.window_hours"
                              " == null ? {} : {window_hours = each.value.window_hours})))}")
    oidc = _one(target, "oidc_token")
    assert oidc["service_account_email"] == "${google_service_account.sa[local.manifest.scheduler_invoker].email}"
    assert oidc["audience"] == "${local.reconcile_url}"
    assert manifest()["scheduler_invoker"] == "scheduler"
    assert manifest()["functions"]["reconcile"]["invoked_by"] == ["scheduler"]


def test_secret_containers_are_the_contract_names(tf):
    assert tf["locals"]["secret_names"] == list(SECRET_NAMES)
    body = tf["resource"][("google_secret_manager_secret", "secrets")]
    assert body["for_each"] == "${toset(local.secret_names)}" and body["secret_id"] == "${each.value}"
    assert not any(rtype == "google_secret_manager_secret_version" for rtype, _ in tf["resource"])
    text = "\n".join(p.read_text() for p in INFRA.rglob("*.tf"))
    assert "secret_data" not in text


def test_cloud_sql(tf):
    body = tf["resource"][("google_sql_database_instance", "main")]
    assert body["database_version"] == "POSTGRES_16"
    settings = _one(body, "settings")
    flags = {f["name"]: f["value"] for f in settings["database_flags"]}
    assert flags["cloudsql.iam_authentication"] == "on"
    assert flags["max_connections"] == "${tostring(local.manifest.database.max_connections)}"
    backups = _one(settings, "backup_configuration")
    assert backups["enabled"] is True and backups["point_in_time_recovery_enabled"] is True
    ip = _one(settings, "ip_configuration")
    assert "authorized_networks" not in ip and ip["ssl_mode"] == "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"
    assert body["name"] == "${local.manifest.database.instance}"
    assert tf["resource"][("google_sql_database", "main")]["name"] == "${local.manifest.database.name}"
    user = tf["resource"][("google_sql_user", "iam")]
    assert user["type"] == "CLOUD_IAM_SERVICE_ACCOUNT"
    assert user["name"] == '${trimsuffix(google_service_account.sa[each.key].email, ".gserviceaccount.com")}'
    assert user["for_each"] == "${module.layout.db_iam_users}"


def test_iam_is_least_privilege(tf):
    resources = tf["resource"]
    accessor = resources[("google_secret_manager_secret_iam_member", "accessors")]
    assert accessor["role"] == "roles/secretmanager.secretAccessor"
    assert accessor["for_each"] == "${module.layout.secret_bindings}"
    act_as = resources[("google_service_account_iam_member", "act_as")]
    assert act_as["role"] == "roles/iam.serviceAccountUser"
    queue_iam = resources[("google_cloud_tasks_queue_iam_member", "queues")]
    assert queue_iam["name"] == "${google_cloud_tasks_queue.queues[each.value.queue].name}"
    invokers = resources[("google_cloud_run_v2_service_iam_member", "invokers")]
    assert invokers["role"] == "roles/run.invoker"
    assert invokers["for_each"] == "${var.functions_deployed ? module.layout.invoker_bindings : {}}"
    assert not any(rtype.startswith("google_cloudfunctions2_function_iam") for rtype, _ in resources)

    accounts = manifest()["service_accounts"]
    granted = {role for sa in accounts.values() for role in sa["project_roles"] + sa["queue_roles"]}
    assert not granted & {"roles/owner", "roles/editor", "roles/secretmanager.secretAccessor",
                          "roles/cloudtasks.admin", "roles/iam.serviceAccountUser", "roles/run.invoker"}
    for role in ("api", "worker", "reconcile", "admin", "selftest"):
        assert {"roles/cloudsql.client", "roles/cloudsql.instanceUser"} <= set(accounts[role]["project_roles"])
    for role in ("api", "worker", "reconcile", "admin"):  # they enqueue, with OIDC tokens of the tasks account
        assert "roles/cloudtasks.enqueuer" in accounts[role]["queue_roles"] and accounts[role]["acts_as"] == ["tasks"]
    assert accounts["selftest"]["queue_roles"] == ["roles/cloudtasks.viewer"]  # the task_queue check reads a queue
    for role in ("tasks", "scheduler"):
        assert accounts[role]["project_roles"] == accounts[role]["queue_roles"] == accounts[role]["acts_as"] == []


def expected_layout(db_iam_auth: bool, project: str = "demo-proj") -> dict[str, Any]:
    """What infra/modules/layout must compute, derived here in Python from the manifest."""
    m = manifest()
    email = {r: f"{sa['account_id']}@{project}.iam.gserviceaccount.com" for r, sa in m["service_accounts"].items()}
    function_secrets = {
        name: fn["secrets"] + ([] if db_iam_auth or not m["service_accounts"][fn["role"]]["database"]
                               else ["db-password"])
        for name, fn in m["functions"].items()
    }
    secret_bindings = {}
    for name, fn in m["functions"].items():
        for secret in function_secrets[name]:
            secret_bindings[f"{fn['role']}/{secret}"] = {"role": fn["role"], "secret": secret}
    if not db_iam_auth:
        secret_bindings[f"{m['migrator']}/db-password"] = {"role": m["migrator"], "secret": "db-password"}
    return {
        "function_secrets": function_secrets,
        "secret_bindings": secret_bindings,
        "db_iam_users": {r: email[r].removesuffix(".gserviceaccount.com")
                         for r, sa in m["service_accounts"].items() if sa["database"]} if db_iam_auth else {},
        "invoker_bindings": {
            "order_worker/tasks": {"function": "order_worker", "service": "order-worker",
                                   "member": f"serviceAccount:{email['tasks']}"},
            "reconcile/scheduler": {"function": "reconcile", "service": "reconcile",
                                    "member": f"serviceAccount:{email['scheduler']}"},
        },
        "function_urls": {name: f"https://{name.replace('_', '-')}-123456.asia-south1.run.app"
                          for name in m["functions"]},
    }


def test_the_manifest_serves_the_brief():
    m = manifest()
    assert list(m["functions"]) and set(m["functions"]) == set(FUNCTION_NAMES)
    for name, fn in m["functions"].items():
        assert set(fn["secrets"]) == EXPECTED_SECRETS[name], name
        assert set(fn["secrets"]) <= set(SECRET_NAMES)
        assert fn["public"] is (name in PUBLIC_FUNCTIONS), name
        assert fn["role"] in m["service_accounts"]
    assert set(m["never_deployed_secrets"]) == NEVER_DEPLOYED
    assert m["password_auth_secret"] in SECRET_NAMES and m["runtime"] == "python312"
    assert m["database"]["version"] == "POSTGRES_16"


def test_each_function_entry_point_is_its_name():
    for name in FUNCTION_NAMES:
        tree = ast.parse((ROOT / "functions" / name / "main.py").read_text())
        entry = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == name]
        assert entry, f"functions/{name}/main.py defines no {name}()"
        decorators = [ast.unparse(d) for d in entry[0].decorator_list]
        assert "functions_framework.http" in decorators, name


def test_the_connection_budget_holds():
    """Σ(pool × max instances) of every function fits in Cloud SQL's max_connections, less the reserve."""
    m = manifest()
    db = m["database"]
    used = sum(fn["db_pool_size"] * fn["max_instances"] for fn in m["functions"].values())
    assert used <= db["max_connections"] - db["reserved_connections"], used
    assert db["reserved_connections"] >= 10  # superuser slots, migrations, an operator's psql
    for name, fn in m["functions"].items():
        assert 1 <= fn["db_pool_size"] <= 64  # Settings.db_pool_size bounds
        # A request holds at most two sessions (reconcile: its advisory-lock session and a working one).
        assert fn["db_pool_size"] <= 2 * fn["concurrency"], f"{name}: a pool larger than its requests can use"
        assert fn["concurrency"] == 1 or float(fn["cpu"]) >= 1, name
        assert fn["max_instances"] >= 1 and fn["min_instances"] <= fn["max_instances"]
    assert m["functions"]["order_worker"]["timeout_s"] > Settings().jobs_dispatch_deadline_s


def test_the_plan_helper_uses_only_the_standard_library():
    """deploy.sh runs infra/deploy_plan.py with whatever python3 sits next to gcloud."""
    import sys

    tree = ast.parse((INFRA / "deploy_plan.py").read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module.split(".")[0])
    assert modules <= set(sys.stdlib_module_names) | {"__future__"}, modules


terraform = pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed")


def _terraform(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": __import__("os").environ.get("PATH", ""), "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1",
           "HOME": str(cwd), "TF_CLI_CONFIG_FILE": str(cwd / "none.tfrc")}
    return subprocess.run(["terraform", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@terraform
def test_terraform_fmt():
    result = _terraform(INFRA, "fmt", "-check", "-recursive", "-diff")
    assert result.returncode == 0, result.stdout + result.stderr


@terraform
@pytest.mark.parametrize("db_iam_auth", [True, False])
def test_the_layout_module_computes_what_deploy_sh_deploys(tmp_path, db_iam_auth):
    """Evaluate infra/modules/layout offline (it has no provider) and compare with the Python derivation."""
    (tmp_path / "none.tfrc").write_text("")
    (tmp_path / "main.tf").write_text(f"""
module "layout" {{
  source           = "{INFRA / 'modules' / 'layout'}"
  manifest         = jsondecode(file("{INFRA / 'functions.json'}"))
  project_id       = "demo-proj"
  project_number   = "123456"
  region           = "asia-south1"
  db_iam_auth      = {str(db_iam_auth).lower()}
}}
output "layout" {{
  value = module.layout
}}
""")
    for args in (("init", "-input=false", "-no-color"), ("apply", "-auto-approve", "-input=false", "-no-color")):
        result = _terraform(tmp_path, *args)
        assert result.returncode == 0, result.stdout + result.stderr
    result = _terraform(tmp_path, "output", "-json", "layout")
    assert result.returncode == 0, result.stderr
    layout = json.loads(result.stdout)
    expected = expected_layout(db_iam_auth)
    for key, value in expected.items():
        assert layout[key] == value, key
    m = manifest()
    used = sum(fn["db_pool_size"] * fn["max_instances"] for fn in m["functions"].values())
    assert layout["connection_budget"] == {
        "used": used, "available": m["database"]["max_connections"] - m["database"]["reserved_connections"]}
    assert layout["emails"]["tasks"] == "orderpipe-tasks@demo-proj.iam.gserviceaccount.com"
    # The same names deploy.sh derives.
    plan = __import__("tests.deploy.kit", fromlist=["deploy_plan_module"]).deploy_plan_module()
    for role in m["service_accounts"]:
        assert layout["emails"][role] == plan.sa_email(m, role, "demo-proj")
    assert layout["function_urls"]["order_worker"] == plan.run_url("order_worker", "123456", "asia-south1")


def _block_text(text: str, opening: str) -> str:
    """`opening` and its brace-matched body, from HCL source text."""
    start = text.index(opening)
    depth = 0
    for index in range(start + len(opening) - 1, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[start:index + 1]
    raise AssertionError(f"unbalanced {opening!r}")


@terraform
def test_scheduler_bodies_are_what_reconcile_reads(tf, tmp_path):
    """Terraform itself evaluates each job's body expression over infra/scheduler.tf's table."""
    table = _block_text((INFRA / "scheduler.tf").read_text(), "schedules = {")
    expression = _one(tf["resource"][("google_cloud_scheduler_job", "reconcile")], "http_target")["body"]
    assert expression.startswith("${") and expression.endswith("}")
    expression = expression[2:-1].replace("each.value", "job")
    (tmp_path / "none.tfrc").write_text("")
    (tmp_path / "main.tf").write_text(
        f"locals {{\n  {table}\n}}\n"
        "output \"bodies\" {\n"
        f"  value = {{ for name, job in local.schedules : name => base64decode({expression}) }}\n}}\n"
    )
    for args in (("init", "-input=false", "-no-color"), ("apply", "-auto-approve", "-input=false", "-no-color")):
        result = _terraform(tmp_path, *args)
        assert result.returncode == 0, result.stdout + result.stderr
    bodies = json.loads(_terraform(tmp_path, "output", "-json", "bodies").stdout)
    assert set(bodies) == {s.name for s in SCHEDULES}
    for schedule in SCHEDULES:
        expected = {"tasks": list(schedule.tasks)}
        if schedule.window_hours is not None:
            expected["window_hours"] = schedule.window_hours
        assert json.loads(bodies[schedule.name]) == expected
