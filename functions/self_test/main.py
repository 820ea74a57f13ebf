"""self_test: uptime checks — /healthz (no I/O), /readyz (database + migrations), /__selftest (everything)."""

import functions_framework

from shared import logs
from shared.config import get_settings
from shared.flows import health
from shared.http import Reply, Routes
from shared.runtime import get_runtime

routes = Routes("self_test", openapi="self_test")


@routes.get("/healthz")
def healthz(request):
    return health.liveness(get_settings())


@routes.get("/readyz")
def readyz(request):
    ready, checks = health.readiness(get_runtime())
    body = {"status": "ok" if ready else "unavailable", "checks": checks}
    if not ready:
        return Reply(_with_error(body, "not_ready", "The database or its migrations are not ready."), 503)
    return body


@routes.get("/__selftest")
def selftest(request):
    status, body = health.self_test(get_runtime())
    if status >= 400:
        body = _with_error(body, "self_test_failed", "A critical self-test check failed.")
    return Reply(body, status)


def _with_error(body, code, message):
    """A 503 is an error like any other (CONTRACT.md): the envelope beside the fields uptime checks read."""
    return {**body, "error": {"code": code, "message": message, "details": {"checks": body["checks"]},
                              "correlation_id": logs.correlation_id.get()}}


@functions_framework.http
def self_test(request):
    return routes.handle(request)
