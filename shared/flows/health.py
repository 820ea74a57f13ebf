"""Liveness, readiness and the self-test of CONTRACT.md's self_test function."""

from __future__ import annotations

import logging
from typing import Any

from shared import errors
from shared.db import migrations
from shared.runtime import Runtime
from shared.secrets import SECRET_NAMES

log = logging.getLogger(__name__)

# Checks whose failure makes the instance unable to take payments: 503.
CRITICAL_CHECKS = ("database", "migrations", "secrets")


def liveness(runtime_settings) -> dict[str, Any]:
    """No I/O: the process is up and knows what it is."""
    return {"status": "ok", "version": runtime_settings.version, "safe_mode": runtime_settings.safe_mode}


def readiness(runtime: Runtime) -> tuple[bool, dict[str, str]]:
    """Ready when the database answers and every migration is applied."""
    checks = {"database": _check_database(runtime), "migrations": "failed"}
    if checks["database"] == "ok":
        checks["migrations"] = _check_migrations(runtime)
    return all(v == "ok" for v in checks.values()), checks


def self_test(runtime: Runtime) -> tuple[int, dict[str, Any]]:
    """Every check by name; 503 when a critical one fails. Never reveals a secret value."""
    ready, checks = readiness(runtime)
    checks["task_queue"] = _safely(runtime.dispatcher.check)
    checks["secrets"] = _check_secrets(runtime)
    checks.update(_check_providers(runtime))
    critical_failed = any(checks[name] == "failed" for name in CRITICAL_CHECKS)
    if critical_failed:
        status = "blocker"
    elif any(value in ("failed", "degraded") for value in checks.values()):
        status = "degraded"
    else:
        status = "ok"
    body = {**liveness(runtime.settings), "status": status, "checks": checks}
    return (503 if critical_failed else 200), body


def _check_database(runtime: Runtime) -> str:
    try:
        with runtime.db.connection(wait_s=5) as conn:
            conn.fetch_value("SELECT 1")
        return "ok"
    except errors.OrderpipeError:
        return "failed"


def _check_migrations(runtime: Runtime) -> str:
    try:
        with runtime.db.connection(wait_s=5) as conn:
            return "ok" if migrations.is_current(conn) else "failed"
    except errors.OrderpipeError:
        return "failed"


def _check_secrets(runtime: Runtime) -> str:
    settings = runtime.settings
    needed = [
        name for name in SECRET_NAMES
        # db-password only matters for Cloud SQL password auth; the internal task token only for the
        # local task queue (on Google Cloud, IAM and OIDC stand in for it and it is never deployed).
        if not (name == "db-password" and not (settings.cloud_sql_instance and not settings.db_iam_auth))
        and not (name == "internal-task-token" and settings.on_google_cloud)
    ]
    missing = []
    for name in needed:
        try:
            runtime.secrets.get(name)
        except errors.OrderpipeError:
            missing.append(name)
    if missing:
        log.warning("secrets not loadable", extra={"secrets": missing})
        return "failed"
    return "ok"


def _check_providers(runtime: Runtime) -> dict[str, str]:
    try:
        gateways = runtime.gateways
    except Exception:
        log.warning("gateway adapters could not be built", exc_info=True)
        return {"esewa": "failed", "khalti": "failed", "stripe": "failed"}
    result = {}
    for name in ("esewa", "khalti", "stripe"):
        gateway = gateways.get(name) if hasattr(gateways, "get") else None
        if gateway is None:
            result[name] = "failed"
            continue
        outcome = _safely(gateway.dry_run)
        if outcome == "ok" and runtime.settings.safe_mode:
            outcome = "safe_mode"
        result[name] = outcome
    return result


def _safely(check) -> str:
    try:
        return check()
    except Exception:
        log.warning("self-test check raised", exc_info=True)
        return "failed"
