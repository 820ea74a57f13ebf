"""webhook_intake: signed events from gateways and providers — checked, stored once, answered at once (public)."""

import functions_framework

from shared.flows import webhooks
from shared.http import Routes, raw_body
from shared.runtime import get_runtime

routes = Routes("webhook_intake", openapi="webhook_intake")


@routes.post("/stripe")
def stripe(request):
    runtime = get_runtime()
    return webhooks.receive_stripe(runtime.db, runtime.secrets, raw_body(request),
                                   request.headers.get("Stripe-Signature"))


@routes.post("/standard/<source>")
def standard(request, source):
    runtime = get_runtime()
    return webhooks.receive_standard(runtime.db, runtime.secrets, runtime.settings, source, raw_body(request),
                                     request.headers)


@routes.post("/verification")
def verification(request):
    runtime = get_runtime()
    return webhooks.receive_verification(runtime.db, runtime.secrets, raw_body(request),
                                         request.headers.get("X-Signature"))


@functions_framework.http
def webhook_intake(request):
    return routes.handle(request)
