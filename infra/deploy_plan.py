#!/usr/bin/env python3
"""orderpipe's deploy plan: what deploy.sh stages, runs and prints, computed from infra/functions.json.

Standard library only, Python 3.9+: it runs wherever gcloud runs (the cloud-sdk image, a laptop).
deploy.sh calls its subcommands; tests/deploy import it. Nothing here calls gcloud or the network.

Where each value comes from, first match wins:
  1. deploy.sh flags (--project, --region, --project-number, --public-base-url, ...);
  2. the config file: `terraform -chdir=infra output -json deploy_config > infra/env/<env>.json`
     (read by default when it exists, or given with --config);
  3. the conventions Terraform also follows (names from infra/functions.json).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "infra" / "functions.json"
MIGRATE_DIR = "_migrate"  # build/<this>/ = shared/ + migrate.py: the migration runs the staged code too

# Never shipped in a bundle: caches, tests, local data, local secrets.
STAGE_IGNORE = (
    "__pycache__", "*.pyc", "*.pyo", "tests", "test_*.py", "*_test.py", "conftest.py", ".orderpipe*",
    "pgdata", "secrets.json", "*.egg-info", ".pytest_cache", ".ruff_cache", ".hypothesis", ".DS_Store", "*.tmp",
)
_ENV_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
# Google project ids (6–30 characters, also legacy domain-scoped ones like example.com:shop); short names
# such as `demo` pass too so a plan can be read before a project exists. Never shell metacharacters.
_PROJECT = re.compile(r"^[a-z][a-z0-9.:-]{1,61}[a-z0-9]$")
_REGION = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
_KEY = re.compile(r"^[A-Z][A-Z0-9_]*$")


class PlanError(Exception):
    """A wrong flag or an inconsistent manifest: deploy.sh prints it and stops before calling anything."""


# --- the manifest ---------------------------------------------------------------------------------------


def load_manifest(path: Path = MANIFEST) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def secret_env_name(secret: str) -> str:
    """`admin-token` → `ORDERPIPE_SECRET_ADMIN_TOKEN` (the same rule as shared.secrets.env_name)."""
    return "ORDERPIPE_SECRET_" + secret.upper().replace("-", "_")


def sa_email(manifest: dict[str, Any], role: str, project: str) -> str:
    return f"{manifest['service_accounts'][role]['account_id']}@{project}.iam.gserviceaccount.com"


def db_iam_user(email: str) -> str:
    """Cloud SQL names an IAM service-account user after its email without `.gserviceaccount.com`."""
    suffix = ".gserviceaccount.com"
    return email[: -len(suffix)] if email.endswith(suffix) else email


def service_name(function: str) -> str:
    """The Cloud Run service behind a 2nd gen function: lower case, `_` → `-`."""
    return function.lower().replace("_", "-")


def run_url(function: str, project_number: str, region: str) -> str:
    """The function's deterministic run.app URL (known before the first deploy; also its OIDC audience)."""
    return f"https://{service_name(function)}-{project_number}.{region}.run.app"


def connection_budget(manifest: dict[str, Any]) -> tuple[int, int]:
    """(connections the functions may open at most, connections they may use): the first must not exceed the second."""
    used = sum(f["db_pool_size"] * f["max_instances"] for f in manifest["functions"].values())
    db = manifest["database"]
    return used, db["max_connections"] - db["reserved_connections"]


def function_secrets(manifest: dict[str, Any], function: str, db_iam_auth: bool) -> list[str]:
    """The secrets one function gets as environment variables, in manifest order."""
    spec = manifest["functions"][function]
    names = list(spec["secrets"])
    if not db_iam_auth and manifest["service_accounts"][spec["role"]]["database"]:
        names.append(manifest["password_auth_secret"])
    return names


def check_manifest(manifest: dict[str, Any]) -> None:
    """Refuse a manifest that would deploy something unsafe or impossible."""
    accounts = manifest["service_accounts"]
    for name, spec in manifest["functions"].items():
        if spec["role"] not in accounts:
            raise PlanError(f"{name}: unknown role {spec['role']!r}")
        if spec["concurrency"] > 1 and float(spec["cpu"]) < 1:
            raise PlanError(f"{name}: concurrency {spec['concurrency']} needs cpu >= 1")
        if spec["public"] and not spec["may_be_public"]:
            raise PlanError(f"{name}: may not be public")
        leaked = set(spec["secrets"]) & set(manifest["never_deployed_secrets"])
        if leaked:
            raise PlanError(f"{name}: {sorted(leaked)} is never deployed")
        for invoker in spec["invoked_by"]:
            if invoker not in accounts:
                raise PlanError(f"{name}: unknown invoker {invoker!r}")
    used, available = connection_budget(manifest)
    if used > available:
        raise PlanError(f"connection budget exceeded: {used} > {available}")


# --- options ---------------------------------------------------------------------------------------------


@dataclass
class Options:
    project: str
    region: str
    env: str = "dev"
    only: list[str] | None = None
    public: set[str] = field(default_factory=set)
    db_iam_auth: bool = True
    project_number: str | None = None
    secret_versions: dict[str, str] = field(default_factory=dict)
    build_dir: Path = ROOT / "build"
    safe_mode: bool = True
    metrics_timezone: str = "UTC"
    public_base_url: str | None = None
    log_level: str = "INFO"
    extra_env: dict[str, str] = field(default_factory=dict)
    invokers: list[tuple[str, str]] = field(default_factory=list)
    instance_connection_name: str | None = None
    db_name: str | None = None
    migrate_db_user: str | None = None
    order_worker_url: str | None = None
    service_accounts: dict[str, str] = field(default_factory=dict)  # role → email, from the config file
    queues: dict[str, str] = field(default_factory=dict)
    config_file: Path | None = None


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise PlanError(f"not a boolean: {value!r}")


def _pairs(values: list[str] | None, what: str) -> list[tuple[str, str]]:
    pairs = []
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise PlanError(f"{what} takes KEY=VALUE, got {item!r}")
        pairs.append((key, value))
    return pairs


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--project", required=True)
    p.add_argument("--region", required=True)
    p.add_argument("--env", default="dev")
    p.add_argument("--only", default="")
    p.add_argument("--public", default="", help="also make these (admin, self_test) public")
    p.add_argument("--db-password-auth", action="store_true")
    p.add_argument("--project-number")
    p.add_argument("--secret-version", action="append", help="NAME=VERSION pin (else latest, resolved at deploy)")
    p.add_argument("--build-dir")
    p.add_argument("--config")
    p.add_argument("--safe-mode")
    p.add_argument("--metrics-timezone")
    p.add_argument("--public-base-url")
    p.add_argument("--log-level")
    p.add_argument("--set-env", action="append", help="KEY=VALUE for every function")
    p.add_argument("--invoker", action="append", help="FUNCTION=MEMBER extra run.invoker binding")
    p.add_argument("--migrate-db-user")
    p.add_argument("--order-worker-url", help="override the computed run.app URL (and OIDC audience)")
    p.add_argument("--python", default="python3")
    return p


def options_from(argv: list[str], manifest: dict[str, Any] | None = None) -> Options:
    manifest = manifest or load_manifest()
    args, rest = parser().parse_known_args(argv)
    if rest:
        raise PlanError(f"unknown arguments: {' '.join(rest)}")
    if not _PROJECT.match(args.project):
        raise PlanError(f"--project {args.project!r} is not a project id")
    if not _REGION.match(args.region):
        raise PlanError(f"--region {args.region!r} is not a region")
    if not _ENV_NAME.match(args.env):
        raise PlanError(f"--env {args.env!r}: lower-case letters, digits and '-' only")

    config: dict[str, Any] = {}
    config_file = Path(args.config) if args.config else ROOT / "infra" / "env" / f"{args.env}.json"
    if args.config and not config_file.is_file():
        raise PlanError(f"--config {config_file} does not exist")
    if config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        if "value" in config and isinstance(config["value"], dict):  # `terraform output -json` of all outputs
            config = config["value"]
        if config.get("project_id") not in (None, args.project):
            raise PlanError(f"{config_file} is for project {config['project_id']!r}, not {args.project!r}")
        if config.get("region") not in (None, args.region):
            raise PlanError(f"{config_file} is for region {config['region']!r}, not {args.region!r}")
    else:
        config_file = None

    functions = list(manifest["functions"])
    only = [name.strip() for name in args.only.split(",") if name.strip()] or None
    for name in only or []:
        if name not in functions:
            raise PlanError(f"--only: unknown function {name!r} (known: {', '.join(functions)})")
    public = {name.strip() for name in args.public.split(",") if name.strip()}
    for name in public:
        if name not in functions:
            raise PlanError(f"--public: unknown function {name!r}")
        if not manifest["functions"][name]["may_be_public"]:
            raise PlanError(f"--public: {name} trusts IAM for its callers and is never public")

    versions = dict(_pairs(args.secret_version, "--secret-version"))
    for name, version in versions.items():
        if not version.isdigit():
            raise PlanError(f"--secret-version {name}={version}: pin a version number")
    extra_env = {str(k): str(v) for k, v in (config.get("extra_env") or {}).items()}
    extra_env.update(_pairs(args.set_env, "--set-env"))
    for key in extra_env:
        if not _KEY.match(key):
            raise PlanError(f"--set-env {key!r} is not an environment variable name")
    invokers = _pairs(args.invoker, "--invoker")
    for name, _member in invokers:
        if name not in functions:
            raise PlanError(f"--invoker: unknown function {name!r}")

    number = args.project_number or config.get("project_number")
    if number is not None and not str(number).isdigit():
        raise PlanError(f"project number {number!r} is not a number")

    def pick(flag: Any, key: str, default: Any) -> Any:
        if flag is not None:
            return flag
        value = config.get(key)
        return default if value in (None, "") else value

    return Options(
        project=args.project,
        region=args.region,
        env=args.env,
        only=only,
        public=public,
        db_iam_auth=False if args.db_password_auth else _bool(config.get("db_iam_auth", True)),
        project_number=str(number) if number is not None else None,
        secret_versions=versions,
        build_dir=Path(args.build_dir).resolve() if args.build_dir else ROOT / "build",
        safe_mode=_bool(pick(args.safe_mode, "safe_mode", True)),
        metrics_timezone=pick(args.metrics_timezone, "metrics_timezone", "UTC"),
        public_base_url=pick(args.public_base_url, "public_base_url", None),
        log_level=pick(args.log_level, "log_level", "INFO"),
        extra_env=extra_env,
        invokers=invokers,
        instance_connection_name=config.get("instance_connection_name"),
        db_name=config.get("db_name"),
        migrate_db_user=args.migrate_db_user,
        order_worker_url=pick(args.order_worker_url, "order_worker_url", None),
        service_accounts=dict(config.get("service_accounts") or {}),
        queues=dict(config.get("queues") or {}),
        config_file=config_file,
    )


# --- the plan --------------------------------------------------------------------------------------------


class Plan:
    """Every value and command of one deploy, for given options."""

    def __init__(self, options: Options, manifest: dict[str, Any] | None = None):
        self.o = options
        self.m = manifest or load_manifest()
        check_manifest(self.m)

    # names -----------------------------------------------------------------------------------------------

    def functions(self) -> list[str]:
        """The functions to deploy, order_worker first (the others enqueue work for it)."""
        names = list(self.m["functions"])
        chosen = [n for n in names if self.o.only is None or n in self.o.only]
        return sorted(chosen, key=lambda n: (n != "order_worker", names.index(n)))

    def email(self, role: str) -> str:
        return self.o.service_accounts.get(role) or sa_email(self.m, role, self.o.project)

    @property
    def instance_connection_name(self) -> str:
        db = self.m["database"]
        return self.o.instance_connection_name or f"{self.o.project}:{self.o.region}:{db['instance']}"

    @property
    def db_name(self) -> str:
        return self.o.db_name or self.m["database"]["name"]

    def queue(self, logical: str) -> str:
        return self.o.queues.get(logical) or self.m["queues"][logical]

    def db_user(self, role: str) -> str:
        if not self.o.db_iam_auth:
            return self.m["database"]["password_user"]
        return db_iam_user(self.email(role))

    @property
    def order_worker_url(self) -> str:
        if self.o.order_worker_url:
            if not self.o.order_worker_url.startswith("https://"):
                raise PlanError("--order-worker-url must be an https:// URL")
            return self.o.order_worker_url.rstrip("/")
        number = self.o.project_number or "PROJECT_NUMBER"
        return run_url("order_worker", number, self.o.region)

    @property
    def needs_project_number(self) -> bool:
        """The project number is only needed for the computed run.app URL."""
        return not (self.o.project_number or self.o.order_worker_url)

    def is_public(self, function: str) -> bool:
        return bool(self.m["functions"][function]["public"]) or function in self.o.public

    def secrets(self, function: str) -> list[str]:
        return function_secrets(self.m, function, self.o.db_iam_auth)

    def needed_secrets(self) -> list[str]:
        return sorted({s for f in self.functions() for s in self.secrets(f)})

    def unpinned_secrets(self) -> list[str]:
        return [s for s in self.needed_secrets() if s not in self.o.secret_versions]

    def secret_version(self, secret: str) -> str:
        return self.o.secret_versions.get(secret, "latest")

    # values ----------------------------------------------------------------------------------------------

    def env_vars(self, function: str) -> dict[str, str]:
        spec = self.m["functions"][function]
        env = {
            "GCP_PROJECT": self.o.project,
            "GCP_REGION": self.o.region,
            "TASK_BACKEND": "cloud_tasks",
            "TASKS_QUEUE_ORDERS": self.queue("orders"),
            "TASKS_QUEUE_TIMERS": self.queue("timers"),
            "TASKS_SERVICE_ACCOUNT": self.email(self.m["tasks_invoker"]),
            "ORDER_WORKER_URL": self.order_worker_url,
            "CLOUD_SQL_INSTANCE": self.instance_connection_name,
            "DB_NAME": self.db_name,
            "DB_USER": self.db_user(spec["role"]),
            "DB_IAM_AUTH": "true" if self.o.db_iam_auth else "false",
            "DB_IP_TYPE": self.m["database"]["ip_type"],
            "DB_POOL_SIZE": str(spec["db_pool_size"]),
            "SECRET_BACKEND": "env",
            "SAFE_MODE": "true" if self.o.safe_mode else "false",
            "METRICS_TIMEZONE": self.o.metrics_timezone,
            "LOG_LEVEL": self.o.log_level,
            "THREADS": str(spec["concurrency"]),
            "WORKERS": "1",
        }
        if self.o.public_base_url:
            env["PUBLIC_BASE_URL"] = self.o.public_base_url
        env.update(self.o.extra_env)
        for key, value in env.items():
            if "," in value:
                raise PlanError(f"{function}: {key} contains ',' which --set-env-vars cannot carry")
        return env

    def secret_refs(self, function: str) -> list[str]:
        return [f"{secret_env_name(s)}={s}:{self.secret_version(s)}" for s in self.secrets(function)]

    def labels(self) -> str:
        labels = {**self.m["labels"], "env": self.o.env}
        return ",".join(f"{k}={v}" for k, v in labels.items())

    # commands --------------------------------------------------------------------------------------------

    def deploy_command(self, function: str) -> list[str]:
        spec = self.m["functions"][function]
        source = self.o.build_dir / function
        build_sa = self.email(self.m["build_service_account"])
        env = self.env_vars(function)
        refs = self.secret_refs(function)
        return [
            "gcloud", "functions", "deploy", function,
            f"--project={self.o.project}",
            "--gen2",
            f"--runtime={self.m['runtime']}",
            f"--region={self.o.region}",
            "--trigger-http",
            f"--source={source}",
            f"--entry-point={function}",
            f"--service-account={self.email(spec['role'])}",
            f"--build-service-account=projects/{self.o.project}/serviceAccounts/{build_sa}",
            "--allow-unauthenticated" if self.is_public(function) else "--no-allow-unauthenticated",
            f"--ingress-settings={spec['ingress']}",
            f"--memory={spec['memory']}",
            f"--cpu={spec['cpu']}",
            f"--concurrency={spec['concurrency']}",
            f"--timeout={spec['timeout_s']}s",
            f"--min-instances={spec['min_instances']}",
            f"--max-instances={spec['max_instances']}",
            "--set-env-vars=" + ",".join(f"{k}={v}" for k, v in env.items()),
            ("--set-secrets=" + ",".join(refs)) if refs else "--clear-secrets",
            f"--update-labels={self.labels()}",
            "--quiet",
        ]

    def invoker_commands(self, function: str) -> list[list[str]]:
        members = [f"serviceAccount:{self.email(role)}" for role in self.m["functions"][function]["invoked_by"]]
        members += [member for name, member in self.o.invokers if name == function]
        return [
            ["gcloud", "functions", "add-invoker-policy-binding", function, f"--project={self.o.project}",
             f"--region={self.o.region}", f"--member={member}", "--quiet"]
            for member in members
        ]

    def url_check_command(self) -> list[str]:
        """Reads order_worker's Cloud Run service: its URLs must include the ORDER_WORKER_URL every function got."""
        return ["gcloud", "run", "services", "describe", service_name("order_worker"), f"--project={self.o.project}",
                f"--region={self.o.region}", "--format=json"]

    def project_number_command(self) -> list[str]:
        return ["gcloud", "projects", "describe", self.o.project, "--format=value(projectNumber)"]

    def secret_version_command(self, secret: str) -> list[str]:
        return ["gcloud", "secrets", "versions", "describe", "latest", f"--secret={secret}",
                f"--project={self.o.project}", "--format=value(name)"]

    def resolve_steps(self) -> list[tuple[str, list[str]]]:
        """What deploy.sh asks gcloud before deploying: (`project-number` | `secret:NAME`, argv)."""
        out: list[tuple[str, list[str]]] = []
        if self.needs_project_number:
            out.append(("project-number", self.project_number_command()))
        out.extend((f"secret:{s}", self.secret_version_command(s)) for s in self.unpinned_secrets())
        return out

    def steps(self) -> list[tuple[str, list[str]]]:
        """(kind, argv) in order after staging, project number and secret pins: `run` or `check-url`."""
        out: list[tuple[str, list[str]]] = []
        for function in self.functions():
            out.append(("run", self.deploy_command(function)))
            if function == "order_worker":
                out.append(("check-url", self.url_check_command()))
            out.extend(("run", argv) for argv in self.invoker_commands(function))
        return out

    # migrations ------------------------------------------------------------------------------------------

    def runtime_db_users(self) -> list[str]:
        roles = sorted({spec["role"] for spec in self.m["functions"].values()})
        return [self.db_user(role) for role in roles if self.m["service_accounts"][role]["database"]]

    def migrate_env(self, user: str | None = None, iam: bool | None = None) -> dict[str, str]:
        iam = self.o.db_iam_auth if iam is None else iam
        if user is None:
            user = self.o.migrate_db_user or (
                db_iam_user(self.email(self.m["migrator"])) if iam else self.m["database"]["password_user"])
        return {
            "CLOUD_SQL_INSTANCE": self.instance_connection_name,
            "DB_NAME": self.db_name,
            "DB_USER": user,
            "DB_IAM_AUTH": "true" if iam else "false",
            "DB_IP_TYPE": self.m["database"]["ip_type"],
            "GCP_PROJECT": self.o.project,
            "GCP_REGION": self.o.region,
            "SECRET_BACKEND": "secret_manager",
            "LOG_LEVEL": "WARNING",
            "DB_STATEMENT_TIMEOUT_MS": "600000",  # a migration may rewrite a big table; the functions keep 15 s
        }

    def migrate_command(self, python: str) -> list[str]:
        """Migrations through the Cloud SQL connector, run by the staged copy of shared/ (never DATABASE_URL)."""
        argv = ["env", "-u", "DATABASE_URL", "-u", "PYTHONPATH"]
        argv += [f"{k}={v}" for k, v in self.migrate_env().items()]
        argv += [python, str(self.o.build_dir / MIGRATE_DIR / "migrate.py")]
        if self.o.db_iam_auth:
            argv += ["--app-role", self.m["database"]["app_role"]]
            for user in self.runtime_db_users():
                argv += ["--member", user]
        return argv

    def bootstrap_command(self, python: str) -> list[str]:
        """The one-off grants, as the built-in `postgres` user (password asked at the terminal, never stored)."""
        argv = ["env", "-u", "DATABASE_URL", "-u", "PYTHONPATH"]
        argv += [f"{k}={v}" for k, v in self.migrate_env(user="postgres", iam=False).items()]
        argv += [python, str(self.o.build_dir / MIGRATE_DIR / "migrate.py"), "--bootstrap",
                 "--app-role", self.m["database"]["app_role"],
                 "--deployer", db_iam_user(self.email(self.m["migrator"]))]
        return argv

    # the readable plan -----------------------------------------------------------------------------------

    def text(self, *, migrate: bool, migrate_only: bool, python: str) -> str:
        o = self.o
        used, available = connection_budget(self.m)
        lines = [
            f"orderpipe deploy plan: project {o.project}, region {o.region}, env {o.env} (dry run: nothing is called)",
            f"  config file:      {o.config_file or 'none (names from infra/functions.json conventions)'}",
            f"  build dir:        {o.build_dir} (each: main.py + shared/ + requirements.txt = requirements.lock)",
            f"  database:         {self.instance_connection_name} / {self.db_name}, "
            + ("IAM database auth" if o.db_iam_auth else "password auth (secret db-password)")
            + f", {self.m['database']['ip_type']} IP through the Cloud SQL connector",
            f"  connections:      {used} at most (sum of pool x max instances) of {available} "
            f"(max_connections {self.m['database']['max_connections']} - {self.m['database']['reserved_connections']}"
            " reserved)",
            f"  queues:           {self.queue('orders')}, {self.queue('timers')}; tasks OIDC identity "
            f"{self.email(self.m['tasks_invoker'])}",
            f"  ORDER_WORKER_URL: {self.order_worker_url}"
            + ("" if o.project_number or o.order_worker_url
               else "  (PROJECT_NUMBER is read with gcloud projects describe at deploy)"),
            f"  SAFE_MODE:        {'true (gateway sandboxes)' if o.safe_mode else 'false (LIVE gateways)'}",
            "",
        ]
        header = ("function", "access", "ingress", "service account", "cpu", "memory", "conc", "pool", "max",
                  "timeout", "secrets")
        rows = [header]
        for function in self.functions():
            spec = self.m["functions"][function]
            rows.append((
                function, "public" if self.is_public(function) else "private", spec["ingress"],
                self.email(spec["role"]), spec["cpu"], spec["memory"], str(spec["concurrency"]),
                str(spec["db_pool_size"]), str(spec["max_instances"]), f"{spec['timeout_s']}s",
                ", ".join(self.secrets(function)) or "-",
            ))
        widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
        for row in rows:
            lines.append("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])) + "  " + row[-1])
        lines += ["", "Steps:"]
        n = 0

        def step(text: str) -> None:
            nonlocal n
            n += 1
            lines.append(f"  {n:>2}. {text}")

        step("stage " + ", ".join(str(o.build_dir / f) for f in self.functions() + [MIGRATE_DIR]))
        if migrate or migrate_only:
            step("migrate: " + shlex.join(self.migrate_command(python)))
        if not migrate_only:
            if self.needs_project_number:
                step("resolve: " + shlex.join(self.project_number_command()))
            for secret in self.unpinned_secrets():
                step(f"pin {secret} to its latest enabled version: " + shlex.join(self.secret_version_command(secret)))
            for kind, argv in self.steps():
                if kind == "check-url":
                    step(f"check that order_worker serves {self.order_worker_url}: " + shlex.join(argv))
                else:
                    step(" \\\n        ".join(_wrap(argv)))
        return "\n".join(lines) + "\n"


def _wrap(argv: list[str]) -> list[str]:
    """A command as shell-quoted lines: the command words first, then one flag a line."""
    words = [shlex.quote(a) for a in argv]
    first = [w for w in words if not w.startswith("--")]
    flags = [w for w in words if w.startswith("--")]
    return [" ".join(first)] + flags


# --- staging ---------------------------------------------------------------------------------------------


def _ignored(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in STAGE_IGNORE)


def _copy_tree(src: Path, dst: Path) -> None:
    def ignore(_directory: str, names: list[str]) -> set[str]:
        return {n for n in names if _ignored(n)}

    shutil.copytree(src, dst, ignore=ignore, symlinks=False)


def stage(plan: Plan, root: Path = ROOT) -> list[Path]:
    """build/<fn>/ = main.py + shared/ + requirements.txt for each function, and build/_migrate/; afresh each time."""
    build = plan.o.build_dir
    build.mkdir(parents=True, exist_ok=True)
    staged = []
    for name in plan.functions() + [MIGRATE_DIR]:
        target = build / name
        if target.exists():
            shutil.rmtree(target)
        target.mkdir()
        if name == MIGRATE_DIR:
            shutil.copy2(root / "infra" / "migrate.py", target / "migrate.py")
        else:
            shutil.copy2(root / "functions" / name / "main.py", target / "main.py")
            shutil.copy2(root / "requirements.lock", target / "requirements.txt")
        _copy_tree(root / "shared", target / "shared")
        staged.append(target)
    return staged


# --- checks on gcloud's answers --------------------------------------------------------------------------


def service_urls(describe_json: str) -> list[str]:
    """Every URL of a Cloud Run service, from `gcloud run services describe --format=json`."""
    data = json.loads(describe_json or "{}")
    urls = []
    annotation = (data.get("metadata") or {}).get("annotations", {}).get("run.googleapis.com/urls")
    if annotation:
        urls.extend(json.loads(annotation))
    for key in ("url",):
        value = (data.get("status") or {}).get(key)
        if value:
            urls.append(value)
    urls.extend(data.get("urls") or [])
    return urls


def version_number(resource_name: str) -> str:
    """`projects/1/secrets/x/versions/7` → `7`."""
    version = resource_name.strip().rsplit("/", 1)[-1]
    if not version.isdigit():
        raise PlanError(f"not a secret version: {resource_name.strip()!r}")
    return version


# --- command line (for deploy.sh) ------------------------------------------------------------------------


def _emit(records: list[tuple[str, list[str]]]) -> None:
    """NUL-separated words; each record is `kind` then its argv, closed by an empty word."""
    out = sys.stdout.buffer
    for kind, argv in records:
        for word in [kind, *argv]:
            if "\0" in word or word == "":
                raise PlanError("an empty or NUL word cannot be emitted")
            out.write(word.encode() + b"\0")
        out.write(b"\0")
    out.flush()


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: deploy_plan.py COMMAND [deploy.sh options]", file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "version-number":
            print(version_number(sys.stdin.read()))
            return 0
        options = options_from(rest)
        plan = Plan(options)
        python = parser().parse_known_args(rest)[0].python
        if command == "check":
            return 0
        if command == "stage":
            for path in stage(plan):
                print(path)
        elif command == "functions":
            print("\n".join(plan.functions()))
        elif command == "resolve-commands":
            _emit(plan.resolve_steps())
        elif command == "steps":
            _emit(plan.steps())
        elif command == "migrate-command":
            _emit([("run", plan.migrate_command(python))])
        elif command == "bootstrap-command":
            _emit([("run", plan.bootstrap_command(python))])
        elif command == "check-url":
            urls = service_urls(sys.stdin.read())
            if plan.order_worker_url not in urls:
                print(f"error: order_worker does not serve {plan.order_worker_url} (its URLs: {urls}); "
                      "every function was given that ORDER_WORKER_URL", file=sys.stderr)
                return 1
            print(f"order_worker serves {plan.order_worker_url}")
        elif command in ("plan", "plan-migrate", "plan-migrate-only"):
            print(plan.text(migrate=command != "plan", migrate_only=command == "plan-migrate-only", python=python),
                  end="")
        else:
            print(f"unknown command {command!r}", file=sys.stderr)
            return 2
    except PlanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
