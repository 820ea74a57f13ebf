"""self_test: uptime checks — /healthz (no I/O), /readyz (database + migrations), /__selftest (everything)."""

import functions_framework

from shared.config import get_settings
from shared.flows import health
from shared.http import Reply, Routes
from shared.runtime import get_runtime

routes = Routes("self_test")


@routes.get("/healthz")
def healthz(request):
    return health.liveness(get_settings())


@routes.get("/readyz")
def readyz(request):
    ready, checks = health.readiness(get_runtime())
    return Reply({"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503)


@routes.get("/__selftest")
def selftest(request):
    status, body = health.self_test(get_runtime())
    return Reply(body, status)


@functions_framework.http
def self_test(request):
    return routes.handle(request)
