"""verify_payment: confirm a payment server-to-server with its gateway and record it once (public)."""

import functions_framework

from shared.flows import verification
from shared.http import Routes, parse_body
from shared.runtime import get_runtime

routes = Routes("verify_payment", openapi="verify_payment")


@routes.post("/")
def verify(request):
    runtime = get_runtime()
    body = parse_body(request, verification.VerifyIn)
    return verification.verify_payment(runtime.db, runtime.gateways, body)


@functions_framework.http
def verify_payment(request):
    return routes.handle(request)
