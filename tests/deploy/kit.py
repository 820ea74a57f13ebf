"""What the deploy proofs share: deploy.sh run against a recording fake gcloud, the manifest, the Terraform files.

Nothing here reaches Google Cloud: the fake `gcloud` is first on PATH, records every argv (one JSON
list a line) and answers the few read-only questions deploy.sh asks (project number, latest secret
versions, the order_worker service's URLs).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_SH = ROOT / "deploy.sh"
INFRA = ROOT / "infra"
PROJECT = "demo-proj"
REGION = "asia-south1"
PROJECT_NUMBER = "123456789012"

# The brief's table (the requirement, written out here, not read back from the manifest).
PUBLIC_FUNCTIONS = {"checkout", "verify_payment", "webhook_intake", "order_status"}
PRIVATE_FUNCTIONS = {"order_worker", "reconcile", "admin", "self_test"}
GATEWAY_KEYS = {"esewa-secret-key", "khalti-secret-key", "stripe-api-key"}
WEBHOOK_SECRETS = {"stripe-webhook-secret", "standard-webhook-secret", "verification-webhook-secret"}
EXPECTED_SECRETS = {
    "checkout": GATEWAY_KEYS,
    "verify_payment": GATEWAY_KEYS,
    "webhook_intake": WEBHOOK_SECRETS,
    "order_worker": GATEWAY_KEYS,
    "reconcile": GATEWAY_KEYS,
    "admin": {"admin-token"},
    # everything self_test's secrets check reports on, except the local-only internal-task-token
    "self_test": GATEWAY_KEYS | WEBHOOK_SECRETS | {"admin-token"},
    "order_status": set(),
}
NEVER_DEPLOYED = {"internal-task-token"}
# Distinct pinned versions per secret, so a mix-up shows.
SECRET_VERSIONS = {
    "esewa-secret-key": "4", "khalti-secret-key": "5", "stripe-api-key": "6", "stripe-webhook-secret": "7",
    "standard-webhook-secret": "8", "verification-webhook-secret": "9", "admin-token": "10", "db-password": "11",
    "internal-task-token": "12",
}

FAKE_GCLOUD = r'''#!{python} -S
"""A recording stand-in for gcloud: appends argv to $FAKE_GCLOUD_LOG and answers read-only questions."""
import json, os, sys

args = sys.argv[1:]
with open(os.environ["FAKE_GCLOUD_LOG"], "a") as log:
    log.write(json.dumps(["gcloud", *args]) + "\n")
number = os.environ.get("FAKE_GCLOUD_PROJECT_NUMBER", "{number}")
fail_on = os.environ.get("FAKE_GCLOUD_FAIL_ON")
if fail_on and " ".join(args).startswith(fail_on):
    print("ERROR: (gcloud) simulated failure", file=sys.stderr)
    sys.exit(1)

def flag(name):
    for arg in args:
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None

if args[:2] == ["projects", "describe"]:
    print(number)
elif args[:3] == ["secrets", "versions", "describe"]:
    versions = json.loads(os.environ.get("FAKE_GCLOUD_SECRET_VERSIONS", "{{}}"))
    secret = flag("--secret")
    if secret not in versions:
        print(f"ERROR: (gcloud.secrets.versions.describe) NOT_FOUND: {{secret}} has no version", file=sys.stderr)
        sys.exit(1)
    print(f"projects/{{number}}/secrets/{{secret}}/versions/{{versions[secret]}}")
elif args[:3] == ["run", "services", "describe"]:
    service, region = args[3], flag("--region")
    urls = [f"https://{{service}}-{{number}}.{{region}}.run.app", f"https://{{service}}-x7f3ab2c4d-el.a.run.app"]
    print(json.dumps({{"metadata": {{"name": service, "annotations": {{"run.googleapis.com/urls": json.dumps(urls)}}}},
                      "status": {{"url": urls[1]}}}}))
elif args[:2] == ["functions", "deploy"]:
    print(f"Deploying function {{args[2]}}... done", file=sys.stderr)
'''


@dataclass
class DeployRun:
    returncode: int
    stdout: str
    stderr: str
    calls: list[list[str]]
    build_dir: Path

    def deploys(self) -> dict[str, list[str]]:
        """Function name → its `gcloud functions deploy` argv, in call order."""
        return {c[3]: c for c in self.calls if c[1:3] == ["functions", "deploy"]}

    def bindings(self) -> list[tuple[str, str]]:
        binds = [c for c in self.calls if c[1:3] == ["functions", "add-invoker-policy-binding"]]
        return [(c[3], flag(c, "--member")) for c in binds]


def flag(argv: list[str], name: str) -> str | None:
    """The value of `--name=value` in argv (the form deploy.sh always uses)."""
    values = [a.split("=", 1)[1] for a in argv if a.startswith(name + "=")]
    assert len(values) <= 1, f"{name} given twice"
    return values[0] if values else None


def env_vars(argv: list[str]) -> dict[str, str]:
    text = flag(argv, "--set-env-vars") or ""
    return dict(item.split("=", 1) for item in text.split(",") if item)


def secret_refs(argv: list[str]) -> dict[str, tuple[str, str]]:
    """ENV → (secret, version) from --set-secrets."""
    text = flag(argv, "--set-secrets")
    if text is None:
        return {}
    refs = {}
    for item in text.split(","):
        env, ref = item.split("=", 1)
        secret, version = ref.rsplit(":", 1)
        refs[env] = (secret, version)
    return refs


def fake_bin(tmp: Path) -> Path:
    """A directory holding the fake gcloud, to put first on PATH."""
    bin_dir = tmp / "fakebin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "gcloud"
    script.write_text(FAKE_GCLOUD.format(python=sys.executable, number=PROJECT_NUMBER))
    script.chmod(0o755)
    # deploy.sh's `python3` (its plan helper, stdlib only): this interpreter, not a slow version-manager shim.
    python3 = bin_dir / "python3"
    if not python3.exists():
        python3.symlink_to(sys.executable)
    return bin_dir


def deploy_env(tmp: Path, log: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDSDK_", "GOOGLE_", "FAKE_GCLOUD"))}
    env.pop("ORDERPIPE_BUILD_DIR", None)
    env.pop("ORDERPIPE_PYTHON", None)
    env["PATH"] = f"{fake_bin(tmp)}{os.pathsep}{env.get('PATH', '')}"
    env["FAKE_GCLOUD_LOG"] = str(log)
    env["FAKE_GCLOUD_SECRET_VERSIONS"] = json.dumps(SECRET_VERSIONS)
    env["CLOUDSDK_CONFIG"] = str(tmp / "gcloud-config")  # even a real gcloud would find no account here
    env.update(extra or {})
    return env


def run_deploy(tmp: Path, *args: str, build_dir: Path | None = None, env: dict[str, str] | None = None,
               log: Path | None = None, timeout: float = 120) -> DeployRun:
    """./deploy.sh with the fake gcloud first on PATH; `calls` = every gcloud argv it ran."""
    tmp.mkdir(parents=True, exist_ok=True)
    log = log or tmp / "gcloud-calls.jsonl"
    if log.exists():
        log.unlink()
    build_dir = build_dir or tmp / "build"
    argv = [str(DEPLOY_SH), "--build-dir", str(build_dir), *args]
    proc = subprocess.run(argv, cwd=ROOT, env=deploy_env(tmp, log, env), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return DeployRun(proc.returncode, proc.stdout, proc.stderr, calls, build_dir)


def standard_args(*extra: str) -> list[str]:
    return ["--project", PROJECT, "--region", REGION, "--env", "staging", *extra]


def plan_commands(plan_text: str) -> list[list[str]]:
    """The gcloud commands a dry-run plan prints as whole steps (deploys and bindings), as argv lists."""
    steps: list[str] = []
    for line in plan_text.splitlines():
        stripped = line.strip()
        head, _, rest = stripped.partition(". ")
        if head.isdigit() and line.startswith("  "):
            steps.append(rest)
        elif steps and line.startswith("        "):
            steps[-1] += " " + stripped
    commands = []
    for step in steps:
        if step.startswith("gcloud "):
            commands.append(shlex.split(step.replace(" \\ ", " ")))
    return commands


@cache
def manifest() -> dict[str, Any]:
    return json.loads((INFRA / "functions.json").read_text())


@cache
def deploy_plan_module():
    """infra/deploy_plan.py, imported by path (infra/ is not a package)."""
    spec = importlib.util.spec_from_file_location("orderpipe_deploy_plan", INFRA / "deploy_plan.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def sa_email(role: str, project: str = PROJECT) -> str:
    return f"{manifest()['service_accounts'][role]['account_id']}@{project}.iam.gserviceaccount.com"
