"""reconcile: the scheduled sweeps (private: Cloud Scheduler only)."""

import functions_framework

from shared.access import require_internal_caller
from shared.flows import reconcile as flow
from shared.http import Routes, json_object, validate
from shared.runtime import get_runtime

routes = Routes("reconcile", openapi="reconcile")


@routes.post("/")
def run(request):
    runtime = get_runtime()
    require_internal_caller(request, runtime)
    body = json_object(request) if request.content_length else {}
    return flow.run(runtime, validate(flow.ReconcileIn, body))


@functions_framework.http
def reconcile(request):
    return routes.handle(request)
